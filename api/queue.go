package api

import (
	"encoding/base64"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
)

// QueueMessage is one message of a queue (ARCHITECTURE.md §8): a row of
// the outbox of the shard whose mutation enqueued it, as a consumer
// receives it or the dead-letter list shows it.
type QueueMessage struct {
	// ID is the message's stable ID ("msg_…"): the same on every delivery,
	// for consumers to deduplicate with.
	ID      string
	Queue   string
	ShardID string // the shard whose mutation enqueued it
	Body    string // JSON text, as lunora_enqueue was given it
	// Attempt is the delivery this is: 1 the first time.
	Attempt  int
	Enqueued time.Time
	// VisibleUntil is when a received message's lease ends: unless it is
	// acknowledged or extended by then, it is delivered again.
	VisibleUntil time.Time
	// Receipt names the shard and the message; Ack, Nack and Extend take
	// it (ReceiptOf, ParseReceipt).
	Receipt string
	// Dead-letter messages only: the last failure and when it died.
	Error string
	Died  time.Time
}

// ReceiptOf is the receipt of message id of shardID: the shard ID in
// unpadded base64url, a dot, the message ID.
func ReceiptOf(shardID, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(shardID)) + "." + id
}

// ParseReceipt returns the shard and message a receipt names.
func ParseReceipt(receipt string) (shardID, id string, err error) {
	enc, id, ok := strings.Cut(receipt, ".")
	if !ok || enc == "" || !strings.HasPrefix(id, "msg_") || len(id) > 64 {
		return "", "", Errorf(codes.InvalidArgument, "receipt %.80q is not one Lunora issued (want <shard>.<msg_id> as received)", receipt)
	}
	b, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil || len(b) == 0 {
		return "", "", Errorf(codes.InvalidArgument, "receipt %.80q is not one Lunora issued: its shard part is not base64url", receipt)
	}
	return string(b), id, nil
}

// Settle says what becomes of received messages.
type Settle int

const (
	// Ack: the message was handled; it is deleted.
	Ack Settle = iota + 1
	// Nack: it was not; it is delivered again after Delay (or the queue's
	// back-off when Delay is 0), or goes to the dead-letter queue once it
	// has used its attempts.
	Nack
	// Extend: its lease is extended to Delay from now.
	Extend
)

func (s Settle) String() string {
	switch s {
	case Ack:
		return "ack"
	case Nack:
		return "nack"
	case Extend:
		return "extend"
	}
	return "unknown"
}

// Alarm is one alarm of a shard (ARCHITECTURE.md §8), pending or dead.
type Alarm struct {
	ID       string
	ShardID  string
	Function string
	Args     string // JSON object
	Due      time.Time
	// Attempts is how many times it ran and failed.
	Attempts int
	Created  time.Time
	// Dead alarms only: the last failure and when it died.
	Dead  bool
	Error string
	Died  time.Time
}

// AlarmDue is an entry of a node's alarm index: the shard's next alarm.
type AlarmDue struct {
	ShardID string
	Node    string
	Due     time.Time
}
