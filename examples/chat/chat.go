// Package chat embeds the example application: its lunora.yaml, the schema
// dev mode serves when none is given, and its live chat page (web/).
package chat

import _ "embed"

// Schema is examples/chat/lunora.yaml.
//
//go:embed lunora.yaml
var Schema []byte

// SchemaName names Schema in error messages.
const SchemaName = "examples/chat/lunora.yaml"
