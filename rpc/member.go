package rpc

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// MemberDialOptions are node-API client options for a process that calls
// nodes on behalf of others (a gateway): a node answers UNAUTHENTICATED
// only to a caller without the cluster's credentials (its secret or a
// certificate), which for such a process is its own misconfiguration —
// not its clients' — so the answer becomes INTERNAL, naming the node and
// the fix, rather than reaching a client as a 401 about its own
// credential.
func MemberDialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			return notMember(cc.Target(), invoker(ctx, method, req, reply, cc, opts...))
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			s, err := streamer(ctx, desc, cc, method, opts...)
			if err != nil {
				return nil, notMember(cc.Target(), err)
			}
			return memberStream{ClientStream: s, target: cc.Target()}, nil
		}),
	}
}

// notMember turns a node's UNAUTHENTICATED into INTERNAL.
func notMember(target string, err error) error {
	if st, ok := status.FromError(err); ok && st.Code() == codes.Unauthenticated {
		return status.Errorf(codes.Internal, "node %s refused this process as a cluster member: %s — a configuration error: give it the nodes' cluster secret (-cluster-secret-file) or a cluster certificate (-tls-*)", target, st.Message())
	}
	return err
}

type memberStream struct {
	grpc.ClientStream
	target string
}

func (s memberStream) SendMsg(m any) error { return notMember(s.target, s.ClientStream.SendMsg(m)) }
func (s memberStream) RecvMsg(m any) error { return notMember(s.target, s.ClientStream.RecvMsg(m)) }
func (s memberStream) CloseSend() error    { return notMember(s.target, s.ClientStream.CloseSend()) }
