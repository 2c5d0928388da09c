package wsframe

import (
	"fmt"

	"github.com/gobwas/ws"
)

// CloseError is a protocol failure that closes the connection with Code.
type CloseError struct {
	Code   ws.StatusCode
	Reason string
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("wsframe: %s (close %d)", e.Reason, e.Code)
}

func errProtocol(reason string) error {
	return &CloseError{Code: ws.StatusProtocolError, Reason: reason}
}

var errInvalidUTF8 = &CloseError{Code: ws.StatusInvalidFramePayloadData, Reason: "text is not valid UTF-8"}
