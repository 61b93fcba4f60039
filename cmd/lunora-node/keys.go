package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/auth"
	"github.com/lunora/lunora/rpc"
	"google.golang.org/grpc/codes"
)

const keysUsage = `lunora-node keys manages the API keys gateways accept (kept in the global tier).
It talks to a node's node API — how an operator makes the first admin key.

Usage:
  lunora-node keys create -node ADDR -name NAME -role admin|service|client
        make a key; its token is printed once (stdout) and never stored
  lunora-node keys list -node ADDR
        every key: ID, name, role, created, revoked
  lunora-node keys revoke -node ADDR ID
        revoke a key; gateways refuse it within their -key-cache-ttl

Flags:
`

// runKeys is "lunora-node keys": create, list or revoke API keys.
func runKeys(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprint(stderr, keysUsage)
		return errors.New("name an action: create, list or revoke")
	}
	action := args[0]
	fs := flag.NewFlagSet("lunora-node keys "+action, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, keysUsage); fs.PrintDefaults() }
	addr := fs.String("node", "127.0.0.1:7070", "node-API address of any running node")
	name := fs.String("name", "", "create: who or what will use the key (a label)")
	role := fs.String("role", "", "create: admin (everything, incl. keys), service (every function and admin SQL) or client (the functions lunora.yaml grants to clients)")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long (a cluster electing a leader is retried until then)")
	var clusterFlags clusterTLSFlags
	clusterFlags.register(fs)
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	switch action {
	case "create":
		if fs.NArg() != 0 || *name == "" || !auth.Role(*role).Valid() {
			return errors.New("usage: lunora-node keys create -node ADDR -name NAME -role admin|service|client")
		}
	case "list":
		if fs.NArg() != 0 {
			return errors.New("usage: lunora-node keys list -node ADDR")
		}
	case "revoke":
		if fs.NArg() != 1 {
			return errors.New("usage: lunora-node keys revoke -node ADDR ID")
		}
	default:
		return fmt.Errorf("unknown action %q: use create, list or revoke", action)
	}
	dial, _, _, err := clusterFlags.client()
	if err != nil {
		return err
	}
	c, err := rpc.NewNodeClient(*addr, dial...)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	switch action {
	case "create":
		var token string
		var rec auth.KeyRecord
		err := retryUnavailable(ctx, func() (err error) {
			token, rec, err = c.CreateKey(ctx, *name, auth.Role(*role))
			return err
		})
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "created API key %s (%s, role %s); the token below is shown only now:\n", rec.ID, rec.Name, rec.Role)
		fmt.Fprintln(stdout, token)
	case "list":
		var keys []auth.KeyRecord
		var more bool
		if err := retryUnavailable(ctx, func() (err error) {
			keys, more, err = c.ListKeys(ctx, 0)
			return err
		}); err != nil {
			return err
		}
		w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "ID\tNAME\tROLE\tCREATED\tREVOKED")
		for _, k := range keys {
			revoked := "-"
			if !k.Revoked.IsZero() {
				revoked = k.Revoked.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", k.ID, k.Name, k.Role, k.Created.UTC().Format(time.RFC3339), revoked)
		}
		w.Flush()
		if more {
			fmt.Fprintln(stderr, "(more keys than shown)")
		}
	case "revoke":
		var rec auth.KeyRecord
		if err := retryUnavailable(ctx, func() (err error) {
			rec, err = c.RevokeKey(ctx, fs.Arg(0), false)
			return err
		}); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "revoked API key %s (%s, role %s) at %s\n", rec.ID, rec.Name, rec.Role, rec.Revoked.UTC().Format(time.RFC3339))
	}
	return nil
}

// retryUnavailable retries do while it answers UNAVAILABLE (no leader
// yet, a node restarting) and ctx lasts. A create whose answer was lost
// after the leader stored the key is made again as a new key: the first
// one's token was never shown, so it cannot be used; keys list shows it
// and keys revoke removes it.
func retryUnavailable(ctx context.Context, do func() error) error {
	for {
		err := do()
		if err == nil || api.CodeOf(err) != codes.Unavailable || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(200 * time.Millisecond):
		}
	}
}
