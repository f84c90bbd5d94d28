package serving

import (
	"context"
	"errors"
	"net/http"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/moemesh/moemesh/chat"
	"github.com/moemesh/moemesh/coordinator/control"
	"github.com/moemesh/moemesh/sampling"
	"github.com/moemesh/moemesh/scheduler"
	"github.com/moemesh/moemesh/tokenizer"
)

// Sentinel errors of the front doors. Each is mapped to a gRPC code and
// an HTTP status in classify, the one place where errors become codes.
var (
	// ErrUnavailable: the service cannot serve right now (retry elsewhere
	// or later).
	ErrUnavailable = errors.New("serving: unavailable")
	// ErrInvalid: the request is malformed or its values are out of range.
	ErrInvalid = errors.New("serving: invalid request")
	// ErrUnknownModel: the request names a model this cluster does not
	// serve.
	ErrUnknownModel = errors.New("serving: unknown model")
	// ErrUnauthenticated: a missing or wrong API key.
	ErrUnauthenticated = errors.New("serving: missing or wrong API key")
	// ErrTooManyStreams: the key already has its maximum of concurrent
	// streams.
	ErrTooManyStreams = errors.New("serving: too many concurrent streams")
	// ErrPromptLimit: the prompt has more tokens than the server accepts.
	ErrPromptLimit = errors.New("serving: prompt over the server's limit")
	// ErrBodyTooLarge: the request body is over the server's limit.
	ErrBodyTooLarge = errors.New("serving: request body too large")
	// ErrNoEndpoint: the HTTP path names no endpoint.
	ErrNoEndpoint = errors.New("serving: no such endpoint")
	// ErrUnsupported: a valid request asks for something this server
	// does not do.
	ErrUnsupported = errors.New("serving: unsupported")
)

// class is how one error is reported on each API.
type class struct {
	code   codes.Code
	http   int
	oaType string // OpenAI's error.type
}

var (
	classInvalid     = class{codes.InvalidArgument, http.StatusBadRequest, "invalid_request_error"}
	classUnavailable = class{codes.Unavailable, http.StatusServiceUnavailable, "service_unavailable"}
	classInternal    = class{codes.Internal, http.StatusInternalServerError, "internal_error"}
)

// classify maps an error to its codes: the one place where sentinel
// errors become gRPC codes and HTTP statuses. Matching uses errors.Is, so
// wrapped errors keep their class.
func classify(err error) class {
	switch {
	case errors.Is(err, ErrInvalid), errors.Is(err, chat.ErrInvalid), errors.Is(err, sampling.ErrBadParams),
		errors.Is(err, tokenizer.ErrIDOutOfRange), errors.Is(err, scheduler.ErrBadRequest):
		return classInvalid
	case errors.Is(err, ErrUnknownModel), errors.Is(err, ErrNoEndpoint):
		return class{codes.NotFound, http.StatusNotFound, "not_found_error"}
	case errors.Is(err, ErrUnauthenticated):
		return class{codes.Unauthenticated, http.StatusUnauthorized, "authentication_error"}
	case errors.Is(err, ErrTooManyStreams):
		return class{codes.ResourceExhausted, http.StatusTooManyRequests, "rate_limit_error"}
	case errors.Is(err, ErrPromptLimit):
		return class{codes.ResourceExhausted, http.StatusBadRequest, "invalid_request_error"}
	case errors.Is(err, ErrBodyTooLarge):
		return class{codes.ResourceExhausted, http.StatusRequestEntityTooLarge, "invalid_request_error"}
	case errors.Is(err, scheduler.ErrKVFull):
		return class{codes.ResourceExhausted, http.StatusBadRequest, "invalid_request_error"}
	case errors.Is(err, ErrUnsupported):
		return class{codes.Unimplemented, http.StatusBadRequest, "invalid_request_error"}
	case errors.Is(err, control.ErrNotLeader), errors.Is(err, control.ErrNotReady), errors.Is(err, scheduler.ErrStopped),
		errors.Is(err, scheduler.ErrClusterDown), errors.Is(err, ErrUnavailable), errors.Is(err, control.ErrNoLayout),
		errors.Is(err, control.ErrWorkerLost):
		return classUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		return class{codes.DeadlineExceeded, http.StatusGatewayTimeout, "timeout_error"}
	case errors.Is(err, context.Canceled):
		// 499: nginx's "client closed request"; nobody reads it.
		return class{codes.Canceled, 499, "cancelled"}
	}
	return classInternal
}

// toStatus maps an error to its gRPC status. A status error passes
// through as it is.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok && !isWrapped(err) {
		return err
	}
	return status.Error(classify(err).code, err.Error())
}

// isWrapped reports an error that is not itself a status but wraps one.
func isWrapped(err error) bool {
	_, ok := err.(interface{ GRPCStatus() *status.Status })
	return !ok
}
