package main

import (
	"context"
	"flag"

	"github.com/lunora/lunora/gateway"
	"github.com/lunora/lunora/internal/cli"
)

// registerBlobFlags adds the blob flags in dev mode, where this process
// serves the public API; in a cluster lunora-gateway serves blobs.
func (o *options) registerBlobFlags(fs *flag.FlagSet) {
	if o.dev {
		o.blob = cli.RegisterBlobFlags(fs, true)
	}
}

// devBlobs opens dev mode's blob store: by default a directory under
// -data, with a signing secret generated there on the first start.
func (o *options) devBlobs(ctx context.Context) (*gateway.BlobConfig, error) {
	if o.blob == nil {
		return nil, nil
	}
	return o.blob.Open(ctx, o.dataDir)
}
