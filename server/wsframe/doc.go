// Package wsframe is chatd's incremental WebSocket frame codec for the
// server side of RFC 6455.
//
// A Decoder is fed bytes exactly as they come off a non-blocking socket,
// split anywhere. Whole frames already in the caller's buffer are unmasked in
// place and handed to the Handler without a copy; only a partial header, a
// partial frame or a fragmented message takes a pooled state struct, released
// as soon as the message completes. Text is checked for UTF-8 as it arrives,
// so an invalid byte fails the connection at once (1007), and a message whose
// header announces more than MaxMessage fails before its payload is read
// (1009). Every other protocol violation is a *ProtocolError with code 1002.
//
// Handler callbacks run on the goroutine that calls Feed; the slices they get
// are valid until the callback returns.
//
// Encoding: AppendFrame writes unmasked server frames, so one encoded frame
// can be written to every member of a room.
package wsframe
