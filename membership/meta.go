package membership

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/memberlist"
)

// MetaMaxSize is the most bytes a member's encoded Meta may take (memberlist's
// limit on node metadata).
const MetaMaxSize = memberlist.MetaMaxSize

// Role says what a member is in Lunora.
type Role string

const (
	// RoleNode is a storage node: it may host shards.
	RoleNode Role = "node"
	// RoleGateway is a gateway: a gossip member that never hosts shards.
	RoleGateway Role = "gateway"
)

func (r Role) valid() bool { return r == RoleNode || r == RoleGateway }

// Meta is what a member gossips about itself. It travels JSON-encoded as the
// memberlist node metadata and must encode to at most MetaMaxSize bytes.
type Meta struct {
	ID         string `json:"id"`
	Role       Role   `json:"role"`
	GRPCAddr   string `json:"grpc,omitempty"`
	GossipAddr string `json:"gossip,omitempty"` // set by Start to the advertised gossip address
	BlobAddr   string `json:"blob,omitempty"`
	State      string `json:"state,omitempty"` // lifecycle, e.g. "joining", "active", "leaving"
	Weight     int    `json:"weight,omitempty"`
	Epoch      uint64 `json:"epoch,omitempty"` // newest ring epoch this member has seen
}

// Status is a member's liveness as seen by this process.
type Status string

const (
	// Alive: the member answers probes (or has not yet been found failing).
	Alive Status = "alive"
	// Suspect: the member failed probes and may still refute. memberlist
	// v0.7.0 does not report this state to its user, so it is not
	// currently produced; see the package documentation.
	Suspect Status = "suspect"
	// Dead: the member stopped answering and was declared failed.
	Dead Status = "dead"
	// Left: the member announced that it was leaving.
	Left Status = "left"
)

// Member is one member as seen by this process.
type Member struct {
	Meta
	Addr   string    // gossip address, host:port
	Status Status    // liveness
	Since  time.Time // when Status last changed, by this process's clock
}

// wireMeta is the encoded form: Meta's fields plus a farewell flag that Leave
// sets so that others can tell a graceful leave from a failure.
type wireMeta struct {
	Meta
	Bye bool `json:"bye,omitempty"`
}

// farewell is the minimal encoding used when Meta plus the flag would not
// fit MetaMaxSize.
type farewell struct {
	ID   string `json:"id"`
	Role Role   `json:"role"`
	Bye  bool   `json:"bye"`
}

// encodeMeta checks meta and returns its encoding and the encoding Leave
// gossips.
func encodeMeta(meta Meta) (normal, bye []byte, err error) {
	if meta.ID == "" {
		return nil, nil, errors.New("membership: Meta.ID is required")
	}
	if !meta.Role.valid() {
		if meta.Role == "" {
			return nil, nil, errors.New("membership: Meta.Role is required")
		}
		return nil, nil, fmt.Errorf("membership: Meta.Role %q is not %q or %q", meta.Role, RoleNode, RoleGateway)
	}
	normal, err = json.Marshal(wireMeta{Meta: meta})
	if err != nil {
		return nil, nil, fmt.Errorf("membership: encoding meta: %w", err)
	}
	if len(normal) > MetaMaxSize {
		return nil, nil, fmt.Errorf("membership: meta encodes to %d bytes, more than the %d bytes gossip allows; shorten its fields", len(normal), MetaMaxSize)
	}
	bye, err = json.Marshal(wireMeta{Meta: meta, Bye: true})
	if err == nil && len(bye) > MetaMaxSize {
		bye, err = json.Marshal(farewell{ID: meta.ID, Role: meta.Role, Bye: true})
	}
	if err != nil {
		return nil, nil, fmt.Errorf("membership: encoding meta: %w", err)
	}
	// The farewell form is at most the ID and role plus a few bytes, which
	// already fitted in normal, so it fits too.
	return normal, bye, nil
}

// decodeMeta decodes a peer's metadata. It never fails: metadata that is not
// a usable encoding yields a Meta holding only the memberlist node name as ID,
// and problem says what was wrong. The node name always wins over the ID in
// the metadata, since it is what memberlist keys the member by.
func decodeMeta(name string, raw []byte) (meta Meta, bye bool, problem string) {
	if len(raw) == 0 {
		return Meta{ID: name}, false, "no metadata"
	}
	var w wireMeta
	if err := json.Unmarshal(raw, &w); err != nil {
		return Meta{ID: name}, false, "metadata is not valid JSON: " + err.Error()
	}
	switch w.ID {
	case name:
	case "":
		problem = "metadata has no id"
	default:
		problem = fmt.Sprintf("metadata id %q differs from the node name", w.ID)
	}
	w.ID = name
	return w.Meta, w.Bye, problem
}
