package sdktest

import (
	"context"

	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/grpc/metadata"
)

func metadataContext(ctx context.Context, m propagation.MapCarrier) context.Context {
	for k, v := range m {
		ctx = metadata.AppendToOutgoingContext(ctx, k, v)
	}
	return ctx
}
