package rpc

import (
	"errors"
	"strings"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"

	"github.com/mercato/mercato/platform/problem"
)

// ErrBreakerOpen is wrapped in the CodeUnavailable error of a call that the
// dependency's open circuit breaker refused without sending it.
var ErrBreakerOpen = errors.New("circuit breaker open")

// ErrBulkheadFull is wrapped in the CodeResourceExhausted error of a call
// refused because MaxConcurrent calls to the dependency were already in
// flight.
var ErrBulkheadFull = errors.New("too many concurrent calls")

// InvalidArgument returns a CodeInvalidArgument error naming the offending
// field in a google.rpc.BadRequest detail, so that the gateway can answer
// with a problem that names the field instead of a bare message.
func InvalidArgument(field, description string) *connect.Error {
	return InvalidArguments(problem.FieldError{Field: field, Message: description})
}

// InvalidArguments is InvalidArgument for a request with several invalid
// fields: one BadRequest detail lists them all, in the order given, so that
// a caller can fix everything at once.
func InvalidArguments(fields ...problem.FieldError) *connect.Error {
	parts := make([]string, len(fields))
	violations := make([]*errdetails.BadRequest_FieldViolation, len(fields))
	for i, f := range fields {
		parts[i] = f.Field + ": " + f.Message
		violations[i] = &errdetails.BadRequest_FieldViolation{Field: f.Field, Description: f.Message}
	}
	err := connect.NewError(connect.CodeInvalidArgument, errors.New(strings.Join(parts, "; ")))
	detail, derr := connect.NewErrorDetail(&errdetails.BadRequest{FieldViolations: violations})
	if derr == nil { // marshalling a BadRequest cannot fail; the message still names the fields
		err.AddDetail(detail)
	}
	return err
}

// FieldViolations returns the fields an InvalidArgument error (from this
// process or from a Connect or gRPC peer) names, or nil.
func FieldViolations(err error) []*errdetails.BadRequest_FieldViolation {
	var cerr *connect.Error
	if !errors.As(err, &cerr) {
		return nil
	}
	var out []*errdetails.BadRequest_FieldViolation
	for _, d := range cerr.Details() {
		v, derr := d.Value()
		if derr != nil {
			continue
		}
		if br, ok := v.(*errdetails.BadRequest); ok {
			out = append(out, br.GetFieldViolations()...)
		}
	}
	return out
}
