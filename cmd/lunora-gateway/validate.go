package main

import (
	"fmt"
	"io"
	"log/slog"

	"github.com/lunora/lunora/internal/cli"
	"github.com/lunora/lunora/router"
	"github.com/lunora/lunora/schema"
)

// validate runs the checks run makes before it starts anything — the log
// level, the app's schema, the router's and the request bounds — without
// gossiping, dialing a node or listening: lunora-gateway -validate.
func validate(o *options, stdout io.Writer) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	app, err := schema.Load(o.schemaPath)
	if err != nil {
		return err
	}
	if err := app.CheckLimits(o.limits); err != nil {
		return err
	}
	rc := router.DefaultConfig()
	rc.App, rc.Seeds = app, cli.SplitList(o.nodeAddr)
	if len(rc.Seeds) > 0 { // otherwise gossip finds the nodes (parseFlags checked it is set)
		if err := rc.Validate(); err != nil {
			return err
		}
	}
	if o.requestTimeout <= 0 || o.maxBodyBytes <= 0 {
		return fmt.Errorf("-request-timeout and -max-body-bytes must be positive")
	}
	fmt.Fprintf(stdout, "lunora-gateway: valid: schema %s, nodes %q, gossip %q (seeds %v), grpc %s, http %s\n", o.schemaPath, o.nodeAddr, o.gossipAddr, o.gossipSeeds, o.grpcAddr, o.httpAddr)
	return nil
}
