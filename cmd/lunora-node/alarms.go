package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"github.com/lunora/lunora/internal/cli"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
)

const alarmsUsage = `lunora-node alarms lists alarms through a gateway's admin API (needs an admin
API key: -api-key or $LUNORA_API_KEY).

Usage:
  lunora-node alarms list [flags]
        the alarm index of every node: each shard's next alarm and the node that fires it
  lunora-node alarms list -shard ID [flags]
        one shard's alarms: pending ones by due time, then dead ones with their last error

Flags:
`

// adminCommand starts a "lunora-node NAME ACTION" command that talks to a
// gateway's admin API: the action, its flag set with the gateway flags
// registered, or an error when no action is named (listed in actions).
func adminCommand(name, usage, actions string, args []string, stderr io.Writer) (string, *flag.FlagSet, *gatewayFlags, error) {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprint(stderr, usage)
		return "", nil, nil, errors.New("name an action: " + actions)
	}
	fs := flag.NewFlagSet("lunora-node "+name+" "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage); fs.PrintDefaults() }
	gw := &gatewayFlags{}
	gw.register(fs)
	return args[0], fs, gw, nil
}

// runAlarms is "lunora-node alarms": list alarms.
func runAlarms(args []string, stdout, stderr io.Writer) error {
	action, fs, gw, err := adminCommand("alarms", alarmsUsage, "list", args, stderr)
	if err != nil {
		return err
	}
	shard := fs.String("shard", "", "list this shard's alarms (e.g. room_id=r1) instead of the index")
	limit := fs.Int("limit", 100, "list at most this many (1 to 1000)")
	pos, err := cli.ParseInterspersed(fs, args[1:])
	if err != nil {
		return err
	}
	if action != "list" {
		return fmt.Errorf("unknown action %q: use list", action)
	}
	if len(pos) != 0 {
		return errors.New("usage: lunora-node alarms list [-gateway URL] [-api-key KEY] [-shard ID] [-limit N]")
	}
	q := url.Values{"limit": {fmt.Sprint(*limit)}}
	w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	n := 0
	if *shard == "" {
		var out struct {
			Due []struct {
				ShardID string `json:"shard_id"`
				Node    string `json:"node"`
				Due     string `json:"due"`
			} `json:"due"`
		}
		if err := gw.call(http.MethodGet, "/v1/admin/alarms", q, nil, &out); err != nil {
			return err
		}
		fmt.Fprintln(w, "SHARD\tNODE\tNEXT DUE")
		for _, d := range out.Due {
			fmt.Fprintf(w, "%s\t%s\t%s\n", d.ShardID, orDash(d.Node), d.Due)
		}
		n = len(out.Due)
	} else {
		q.Set("shard", *shard)
		var out struct {
			Alarms []struct {
				ID       string          `json:"id"`
				Function string          `json:"function"`
				Args     json.RawMessage `json:"args"`
				Due      string          `json:"due"`
				Attempts int             `json:"attempts"`
				Dead     bool            `json:"dead"`
				Error    string          `json:"error"`
				Died     string          `json:"died"`
			} `json:"alarms"`
		}
		if err := gw.call(http.MethodGet, "/v1/admin/alarms", q, nil, &out); err != nil {
			return err
		}
		fmt.Fprintln(w, "ID\tSTATE\tFUNCTION\tDUE\tATTEMPTS\tDIED\tERROR\tARGS")
		for _, a := range out.Alarms {
			state := "pending"
			if a.Dead {
				state = "dead"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", a.ID, state, a.Function, a.Due, a.Attempts, orDash(a.Died), cell(a.Error, 60), cell(string(a.Args), 60))
		}
		n = len(out.Alarms)
	}
	w.Flush()
	if n == *limit {
		fmt.Fprintf(stderr, "(showing the first %d; -limit shows more)\n", *limit)
	}
	return nil
}
