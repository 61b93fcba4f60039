package tlsconf

import (
	"crypto/tls"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// DialOption is the gRPC dial option of a client TLS configuration (from
// ClientConfig), to give after rpc.NewNodeClient's defaults.
func DialOption(c *tls.Config) grpc.DialOption {
	return grpc.WithTransportCredentials(credentials.NewTLS(c))
}

// ServerOption is the gRPC server option of a server TLS configuration
// (from ServerConfig).
func ServerOption(c *tls.Config) grpc.ServerOption {
	return grpc.Creds(credentials.NewTLS(c))
}
