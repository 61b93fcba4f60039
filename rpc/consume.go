package rpc

import (
	"context"
	"errors"
	"io"
	"math"
	"sync"
	"time"

	"github.com/lunora/lunora/api"
	lunorav1 "github.com/lunora/lunora/proto/lunora/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// Consumer serves the public API's Consume stream (the gateway). A
// Frontend that is not one answers Consume UNIMPLEMENTED.
type Consumer interface {
	// Consume runs one stream until it ends: ctx ends with the client's
	// call. A nil error ends the stream OK.
	Consume(ctx context.Context, start ConsumeStart, stream ConsumeStream) error
}

// ConsumeStart is a Consume stream's first request.
type ConsumeStart struct {
	Queue string
	// Prefetch bounds the messages the stream holds unsettled (0: the
	// server's default).
	Prefetch int
	// Visibility is each delivered message's lease (0: the queue's).
	Visibility time.Duration
}

// ConsumeSettle is a later request: settle messages by their receipts.
type ConsumeSettle struct {
	RequestID uint64
	// How is 0 when the client named no verb the server knows.
	How      api.Settle
	Receipts []string
	Delay    time.Duration
}

// ConsumeSettled answers a ConsumeSettle.
type ConsumeSettled struct {
	RequestID uint64
	How       api.Settle
	// Settled counts the messages the queue changed.
	Settled int
	// Failed lists the receipts that could not be settled.
	Failed []ReceiptFailure
}

// ReceiptFailure is one receipt a settle request could not settle.
type ReceiptFailure struct {
	Receipt string
	Code    codes.Code
	Message string
}

// ConsumeStream is a Consume stream as its Consumer sees it. Recv is
// called from one goroutine; SendMessage and SendSettled may be called
// from others (the stream serializes them).
type ConsumeStream interface {
	// Recv waits for the client's next settle request: io.EOF once the
	// client has closed its side, INVALID_ARGUMENT for a request that is
	// not a settle, the transport's error when the call ended.
	Recv() (ConsumeSettle, error)
	SendMessage(m api.QueueMessage) error
	SendSettled(s ConsumeSettled) error
}

// Consume implements lunorav1.LunoraServer.
func (s *PublicServer) Consume(stream grpc.BidiStreamingServer[lunorav1.ConsumeRequest, lunorav1.ConsumeResponse]) error {
	ctx := stream.Context()
	c, ok := s.front.(Consumer)
	if !ok {
		return ToStatus(api.New(codes.Unimplemented, "this server serves no queues"))
	}
	first, err := stream.Recv()
	if errors.Is(err, io.EOF) {
		return nil // the client closed before asking for anything
	}
	if err != nil {
		return err
	}
	start := first.GetStart()
	if start == nil {
		return ToStatus(api.New(codes.InvalidArgument, "the first request of a Consume stream must be a start naming the queue"))
	}
	err = c.Consume(ctx, ConsumeStart{
		Queue:      start.GetQueue(),
		Prefetch:   int(min(start.GetPrefetch(), math.MaxInt32)),
		Visibility: MillisToDuration(start.GetVisibilityMs()),
	}, &consumeStream{s: stream})
	if err != nil {
		return statusFor(ctx, s.log, "Lunora.Consume", err)
	}
	return nil
}

type consumeStream struct {
	s  grpc.BidiStreamingServer[lunorav1.ConsumeRequest, lunorav1.ConsumeResponse]
	mu sync.Mutex // serializes Send
}

func (c *consumeStream) Recv() (ConsumeSettle, error) {
	req, err := c.s.Recv()
	if err != nil {
		return ConsumeSettle{}, err
	}
	if req.GetStart() != nil {
		return ConsumeSettle{}, api.New(codes.InvalidArgument, "a Consume stream has one start, its first request; later requests settle messages")
	}
	st := req.GetSettle()
	if st == nil {
		return ConsumeSettle{}, api.New(codes.InvalidArgument, "a Consume request after the start must be a settle (ack, nack or extend with receipts)")
	}
	return ConsumeSettle{RequestID: st.GetRequestId(), How: SettleFromProto(st.GetVerb()), Receipts: st.GetReceipts(), Delay: MillisToDuration(st.GetDelayMs())}, nil
}

func (c *consumeStream) SendMessage(m api.QueueMessage) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.s.Send(&lunorav1.ConsumeResponse{Response: &lunorav1.ConsumeResponse_Message{Message: QueueMessageToProto(m)}})
}

func (c *consumeStream) SendSettled(s ConsumeSettled) error {
	out := &lunorav1.ConsumeSettled{RequestId: s.RequestID, Verb: SettleToProto(s.How), Settled: uint32(max(0, min(s.Settled, math.MaxUint32)))}
	for _, f := range s.Failed {
		out.Failed = append(out.Failed, &lunorav1.ReceiptFailure{Receipt: f.Receipt, Code: uint32(f.Code), Message: f.Message})
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.s.Send(&lunorav1.ConsumeResponse{Response: &lunorav1.ConsumeResponse_Settled{Settled: out}})
}
