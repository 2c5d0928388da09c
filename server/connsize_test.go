package server

import (
	"testing"
	"unsafe"
)

// TestConnSize: a connection at rest is one Conn (the poller's Desc is
// embedded in it), so its size is what each idle connection costs the
// heap, with a pointer in the poller's fd table and a slot in its room.
// 224 bytes is a size class of Go's allocator: one field more moves every
// connection to the 240-byte class.
func TestConnSize(t *testing.T) {
	if got := unsafe.Sizeof(Conn{}); got > 224 {
		t.Errorf("unsafe.Sizeof(Conn{}) = %d bytes, want at most 224", got)
	}
}
