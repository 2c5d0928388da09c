package wsframe

import (
	"fmt"

	"github.com/gobwas/ws"
)

// ProtocolError is a protocol failure by the peer that closes the connection with Code.
type ProtocolError struct {
	Code   ws.StatusCode
	Reason string
}

func (e *ProtocolError) Error() string {
	return fmt.Sprintf("wsframe: %s (close %d)", e.Reason, e.Code)
}

func errProtocol(reason string) error {
	return &ProtocolError{Code: ws.StatusProtocolError, Reason: reason}
}

var errInvalidUTF8 = &ProtocolError{Code: ws.StatusInvalidFramePayloadData, Reason: "text is not valid UTF-8"}
