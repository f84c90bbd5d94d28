package chat

import "errors"

// ErrInvalid: the conversation cannot be rendered as given (empty message
// list, unknown role, a tool definition that is not a JSON object, invalid
// UTF-8, tool-call arguments that are not JSON, ...). Errors wrap it with
// %w and name the offending field; front ends map it to INVALID_ARGUMENT /
// HTTP 400.
var ErrInvalid = errors.New("chat: invalid conversation")
