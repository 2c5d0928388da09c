package pusher

import (
	"errors"
	"fmt"
)

// Close and error codes of the Pusher Channels protocol ("Error Codes" in the
// Pusher Channels Protocol reference). The range tells the client what to do:
// 4000–4099 do not reconnect unchanged, 4100–4199 reconnect after backing off
// (at least 1 s), 4200–4299 reconnect immediately, 4300–4399 other errors
// (sent as pusher:error, the connection stays open).
const (
	CodeAppNotFound            = 4001 // Application does not exist
	CodeAppDisabled            = 4003 // Application disabled
	CodeOverConnectionQuota    = 4004 // Application is over connection quota
	CodePathNotFound           = 4005 // Path not found
	CodeInvalidVersion         = 4006 // Invalid version string format
	CodeUnsupportedProtocol    = 4007 // Unsupported protocol version
	CodeNoProtocol             = 4008 // No protocol version supplied
	CodeUnauthorized           = 4009 // Connection is unauthorized
	CodeOverCapacity           = 4100 // Over capacity (also: slow consumer)
	CodeReconnect              = 4200 // Generic reconnect immediately (server shutdown)
	CodePongTimeout            = 4201 // Pong reply not received
	CodeInactivity             = 4202 // Closed after inactivity
	CodeClientEventRateLimited = 4301 // Client event rejected due to rate limit
)

// Protocol versions accepted in the ?protocol= query parameter of /app/{key}.
// Protocols 1–3 are no longer supported by Pusher; 4 lacks the confirmation
// of public subscriptions that pusher-js relies on.
const (
	MinProtocol = 5
	MaxProtocol = 7
)

// Sentinel errors of the configuration (NewApps, LoadAppsFile, New).
var (
	ErrInvalidApp   = errors.New("pusher: invalid app config")
	ErrDuplicateApp = errors.New("pusher: duplicate app")
	ErrNoRooms      = errors.New("pusher: Config.Rooms is nil")
)

// RefusedError is a refused connection, as Check returns it: the close code
// that Open sends to the client (in pusher:error and the close frame) and
// the reason why.
type RefusedError struct {
	Code   int
	Reason string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("pusher: close %d: %s", e.Code, e.Reason)
}
