package e2e_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lunora/lunora/lunoratest"
	lunorav1 "github.com/lunora/lunora/proto/lunora/v1"
)

// TestAlarmsAcrossASIGKILL: reminders (the chat example's rooms:remind, an
// alarm each) scheduled on a "lunora-node dev" whose shards hibernate
// between them; the node is SIGKILLed once some have fired and restarted
// on the same data directory. Every reminder is posted, none twice.
func TestAlarmsAcrossASIGKILL(t *testing.T) {
	t.Parallel()
	const rooms, perRoom = 20, 4
	b := lunoratest.Build(t)
	node := lunoratest.Start(t, lunoratest.NodeSpec(t, b, "dev", "-idle-timeout", "200ms"))
	c := lunoratest.DialGRPC(t, node.GRPCAddr())
	for r := range rooms {
		for i := range perRoom {
			room := fmt.Sprint("remind-", r)
			delay := int64(1000 + 1000*i + 25*r) // 1 s to ~4.5 s
			resp, err := c.Call(ctxT(t), &lunorav1.CallRequest{Function: "rooms:remind", Args: lunoratest.Args(map[string]any{
				"room_id": room, "body": fmt.Sprintf("reminder %s/%d", room, i), "delay_ms": delay,
			})})
			if err != nil {
				t.Fatal(err)
			}
			if id := resp.GetRows()[0].GetValues()[0].GetText(); !strings.HasPrefix(id, "al_") {
				t.Fatalf("rooms:remind returned %q, want an alarm ID", id)
			}
		}
	}
	posted := func() (map[string]int, error) {
		seen := map[string]int{}
		for r := range rooms {
			resp, err := c.Call(ctxT(t), &lunorav1.CallRequest{Function: "messages:list", Args: lunoratest.Args(map[string]any{"room_id": fmt.Sprint("remind-", r), "limit": int64(100)})})
			if err != nil {
				return nil, err
			}
			for _, row := range resp.GetRows() {
				v := row.GetValues()
				if v[1].GetText() == "reminder" {
					seen[v[2].GetText()]++
				}
			}
		}
		return seen, nil
	}
	// Kill once the first reminders are posted, before the last are due.
	lunoratest.WaitFor(t, 20*time.Second, func() error {
		seen, err := posted()
		if err != nil {
			return err
		}
		if len(seen) < rooms {
			return fmt.Errorf("%d reminders posted", len(seen))
		}
		return nil
	})
	node.Kill()
	node.Restart()
	c = lunoratest.DialGRPC(t, node.GRPCAddr())
	lunoratest.WaitFor(t, restartTimeout, func() error {
		seen, err := posted()
		if err != nil {
			return err
		}
		if len(seen) != rooms*perRoom {
			return fmt.Errorf("%d of %d reminders posted", len(seen), rooms*perRoom)
		}
		return nil
	})
	seen, _ := posted()
	for body, n := range seen {
		if n != 1 {
			t.Errorf("%q posted %d times", body, n)
		}
	}
}
