package rpc_test

import (
	"context"
	"testing"

	"connectrpc.com/connect"

	"github.com/mercato/mercato/platform/problem"
	"github.com/mercato/mercato/platform/rpc"
)

func TestInvalidArgumentsNamesEveryField(t *testing.T) {
	fields := []problem.FieldError{
		{Field: "items[0].quantity", Message: "must be between 1 and 10"},
		{Field: "idempotency_key", Message: "is required"},
	}
	t.Run("locally", func(t *testing.T) {
		err := rpc.InvalidArguments(fields...)
		if err.Code() != connect.CodeInvalidArgument {
			t.Fatalf("code = %v, want invalid_argument", err.Code())
		}
		if want := "items[0].quantity: must be between 1 and 10; idempotency_key: is required"; err.Message() != want {
			t.Errorf("message = %q, want %q", err.Message(), want)
		}
	})
	protocols := []struct {
		name string
		opts []connect.ClientOption
	}{
		{"connect", nil},
		{"grpc", []connect.ClientOption{connect.WithGRPC()}},
	}
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			f := newFixture(t, testRPC(), p.opts...)
			f.srv.setBehaviour(func(context.Context, string, int64) error {
				return rpc.InvalidArguments(fields...)
			})
			err := f.pingCall(ctxFor(t))
			if connect.CodeOf(err) != connect.CodeInvalidArgument {
				t.Fatalf("error = %v, want invalid_argument", err)
			}
			v := rpc.FieldViolations(err)
			if len(v) != len(fields) {
				t.Fatalf("FieldViolations = %v, want %d in one detail", v, len(fields))
			}
			for i, want := range fields {
				if v[i].GetField() != want.Field || v[i].GetDescription() != want.Message {
					t.Errorf("violation %d = %s: %s, want %s: %s", i, v[i].GetField(), v[i].GetDescription(), want.Field, want.Message)
				}
			}
		})
	}
}
