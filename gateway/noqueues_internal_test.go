package gateway

import (
	"context"
	"time"

	"github.com/lunora/lunora/api"
	"google.golang.org/grpc/codes"
)

// noQueues gives a test backend that serves no queues the queue methods
// of Backend, each answering UNIMPLEMENTED.
type noQueues struct{}

var errNoQueues = api.New(codes.Unimplemented, "no queues in this test")

func (noQueues) ReceiveMessages(context.Context, string, int, time.Duration, time.Duration) ([]api.QueueMessage, error) {
	return nil, errNoQueues
}
func (noQueues) SettleMessages(context.Context, string, api.Settle, []string, time.Duration) (int, error) {
	return 0, errNoQueues
}
func (noQueues) DeadMessages(context.Context, string, int) ([]api.QueueMessage, error) {
	return nil, errNoQueues
}
func (noQueues) Redrive(context.Context, string, []string) (int, error) { return 0, errNoQueues }
func (noQueues) Alarms(context.Context, string, int) ([]api.Alarm, error) {
	return nil, errNoQueues
}
func (noQueues) AlarmsDue(context.Context, int) ([]api.AlarmDue, error) { return nil, errNoQueues }
