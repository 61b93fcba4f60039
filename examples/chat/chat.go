// Package chat embeds the example application's lunora.yaml, the schema dev
// mode serves when none is given.
package chat

import _ "embed"

// Schema is examples/chat/lunora.yaml.
//
//go:embed lunora.yaml
var Schema []byte

// SchemaName names Schema in error messages.
const SchemaName = "examples/chat/lunora.yaml"
