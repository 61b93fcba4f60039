package shardhost

import (
	"context"
	"time"

	"github.com/lunora/lunora/api"
	"google.golang.org/grpc/codes"
)

// Temporary: the queue and alarm-listing methods the layers above code
// against, until the queue storage is merged (which deletes this file).
// Receive is named ReceiveMessages: Host.Receive is the handoff's.

func (h *Host) ReceiveMessages(ctx context.Context, queue string, max int, visibility, wait time.Duration) ([]api.QueueMessage, error) {
	return nil, api.Errorf(codes.Unimplemented, "queues: not merged yet")
}

func (h *Host) SettleMessages(ctx context.Context, shardID string, how api.Settle, ids []string, delay time.Duration) (int, error) {
	return 0, api.Errorf(codes.Unimplemented, "queues: not merged yet")
}

func (h *Host) DeadMessages(ctx context.Context, queue string, limit int) ([]api.QueueMessage, error) {
	return nil, api.Errorf(codes.Unimplemented, "queues: not merged yet")
}

func (h *Host) Redrive(ctx context.Context, queue string, ids []string) (int, error) {
	return 0, api.Errorf(codes.Unimplemented, "queues: not merged yet")
}

func (h *Host) Alarms(ctx context.Context, shardID string, limit int) ([]api.Alarm, error) {
	return nil, api.Errorf(codes.Unimplemented, "queues: not merged yet")
}

func (h *Host) AlarmsDue(limit int) []api.AlarmDue {
	return nil
}
