package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"github.com/lunora/lunora/internal/cli"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"
)

// The queue and alarm admin commands talk to a gateway's HTTP admin API
// (/v1/admin/queues, /v1/admin/alarms) with an admin API key: the gateway
// asks every node, where the node API knows one node's shards only.

const queuesUsage = `lunora-node queues inspects and redrives dead-letter queues through a gateway's
admin API (needs an admin API key: -api-key or $LUNORA_API_KEY).

Usage:
  lunora-node queues dead [flags] QUEUE
        the queue's dead-letter messages, oldest death first
  lunora-node queues redrive [flags] QUEUE [ID...]
        put the named dead-letter messages (none named: all of them) back on the queue

Flags:
`

// gatewayFlags are the flags of the commands that call a gateway's admin
// API.
type gatewayFlags struct {
	url     *string
	key     *string
	timeout *time.Duration
}

func (g *gatewayFlags) register(fs *flag.FlagSet) {
	g.url = fs.String("gateway", "http://127.0.0.1:8080", "the gateway's HTTP address (lunora-gateway, or lunora-node in dev mode)")
	g.key = fs.String("api-key", os.Getenv("LUNORA_API_KEY"), "an admin API key (lk_…; lunora-node keys create -role admin); default $LUNORA_API_KEY")
	g.timeout = fs.Duration("timeout", 30*time.Second, "give up after this long")
}

// adminError is an error answer of the gateway.
type adminError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// call sends one admin request and decodes the answer into out.
func (g *gatewayFlags) call(method, path string, query url.Values, body, out any) error {
	base, err := url.Parse(strings.TrimRight(*g.url, "/"))
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return fmt.Errorf("-gateway %q is not an http:// or https:// URL", *g.url)
	}
	u := base.JoinPath(path)
	u.RawQuery = query.Encode()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *g.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return err
	}
	if *g.key != "" {
		req.Header.Set("Authorization", "Bearer "+*g.key)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s %s: reading the answer: %w", method, u.Path, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e adminError
		if json.Unmarshal(raw, &e) == nil && e.Error.Code != "" {
			msg := fmt.Sprintf("%s: %s", e.Error.Code, e.Error.Message)
			if resp.StatusCode == http.StatusUnauthorized && *g.key == "" {
				msg += " (pass an admin API key: -api-key or $LUNORA_API_KEY)"
			}
			return errors.New(msg)
		}
		return fmt.Errorf("%s %s: HTTP %d: %.200s", method, u.Path, resp.StatusCode, raw)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("%s %s: the answer is not what a gateway answers: %v", method, u.Path, err)
	}
	return nil
}

// runQueues is "lunora-node queues": list or redrive dead letters.
func runQueues(args []string, stdout, stderr io.Writer) error {
	action, fs, gw, err := adminCommand("queues", queuesUsage, "dead or redrive", args, stderr)
	if err != nil {
		return err
	}
	limit := fs.Int("limit", 100, "dead: list at most this many (1 to 1000)")
	pos, err := cli.ParseInterspersed(fs, args[1:])
	if err != nil {
		return err
	}
	switch action {
	case "dead":
		if len(pos) != 1 {
			return errors.New("usage: lunora-node queues dead [-gateway URL] [-api-key KEY] [-limit N] QUEUE")
		}
	case "redrive":
		if len(pos) < 1 {
			return errors.New("usage: lunora-node queues redrive [-gateway URL] [-api-key KEY] QUEUE [ID...]")
		}
	default:
		return fmt.Errorf("unknown action %q: use dead or redrive", action)
	}
	queue := pos[0]
	if queue == "" || strings.Contains(queue, "/") {
		return fmt.Errorf("%q is not a queue name", queue)
	}
	switch action {
	case "dead":
		var out struct {
			Messages []struct {
				ID      string          `json:"id"`
				ShardID string          `json:"shard_id"`
				Body    json.RawMessage `json:"body"`
				Attempt int             `json:"attempt"`
				Error   string          `json:"error"`
				Died    string          `json:"died"`
			} `json:"messages"`
		}
		q := url.Values{"limit": {fmt.Sprint(*limit)}}
		if err := gw.call(http.MethodGet, "/v1/admin/queues/"+url.PathEscape(queue)+"/dead", q, nil, &out); err != nil {
			return err
		}
		w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "ID\tSHARD\tATTEMPTS\tDIED\tERROR\tBODY")
		for _, m := range out.Messages {
			fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\t%s\n", m.ID, m.ShardID, m.Attempt, orDash(m.Died), cell(m.Error, 60), cell(string(m.Body), 60))
		}
		w.Flush()
		if len(out.Messages) == *limit {
			fmt.Fprintf(stderr, "(showing the first %d; -limit shows more)\n", *limit)
		}
	case "redrive":
		body := struct {
			IDs []string `json:"ids"`
		}{IDs: pos[1:]}
		var out struct {
			Redriven int `json:"redriven"`
		}
		if err := gw.call(http.MethodPost, "/v1/admin/queues/"+url.PathEscape(queue)+"/redrive", nil, body, &out); err != nil {
			return err
		}
		what := "every dead-letter message"
		if len(body.IDs) > 0 {
			what = fmt.Sprintf("%d named message(s)", len(body.IDs))
		}
		fmt.Fprintf(stdout, "redrove %d message(s) of queue %s back onto it (asked: %s)\n", out.Redriven, queue, what)
	}
	return nil
}

// cell makes s fit one table cell: one line, at most n runes.
func cell(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if s == "" {
		return "-"
	}
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
