// Package check holds the fast checks of Lunora's Kubernetes manifests
// (deploy/k8s): every overlay renders with the kustomize API, every object
// decodes strictly into its k8s.io/api type (an unknown or misspelt field
// fails), and the flags the containers are started with exist in the
// binaries. It is a module of its own so that the Kubernetes libraries stay
// out of Lunora's module; scripts/test runs it.
package check
