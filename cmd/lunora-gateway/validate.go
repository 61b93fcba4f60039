package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/url"

	"github.com/lunora/lunora/auth"
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
	if _, _, _, err := o.tls.load(nil); err != nil {
		return err
	}
	if o.requestTimeout <= 0 || o.maxBodyBytes <= 0 {
		return fmt.Errorf("-request-timeout and -max-body-bytes must be positive")
	}
	authOn, err := o.auth.enabled(o.httpAddr, o.grpcAddr)
	if err != nil {
		return err
	}
	if authOn {
		acfg, err := o.auth.config(noKeyStore{})
		if err != nil {
			return err
		}
		check := true
		if j := acfg.JWT; j != nil && j.JWKSURL != "" {
			// auth.New would fetch the URL; -validate dials nothing, so
			// the URL is only parsed and the rest checked without it.
			if u, err := url.Parse(j.JWKSURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
				return fmt.Errorf("-jwt-jwks-url %q is not an https:// (or http://) URL", j.JWKSURL)
			}
			if j.Issuer == "" || len(j.Audience) == 0 {
				return fmt.Errorf("authentication: JWTs need -jwt-issuer and -jwt-audience")
			}
			j.JWKSURL = ""
			check = j.JWKSFile != "" || j.HS256Secret != nil
		}
		if check {
			authn, err := auth.New(acfg)
			if err != nil {
				return fmt.Errorf("authentication: %w", err)
			}
			authn.Close()
		}
	}
	fmt.Fprintf(stdout, "lunora-gateway: valid: schema %s, nodes %q, gossip %q (seeds %v), grpc %s, http %s, %s\n", o.schemaPath, o.nodeAddr, o.gossipAddr, o.gossipSeeds, o.grpcAddr, o.httpAddr, o.auth.describe(authOn))
	return nil
}

// noKeyStore stands in for the router when -validate checks the
// authentication flags: nothing is looked up.
type noKeyStore struct{}

func (noKeyStore) LookupKey(context.Context, string) (*auth.KeyRecord, error) { return nil, nil }
