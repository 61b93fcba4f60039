package nodeproc

import "github.com/lunora/lunora/schema"

// CheckApp makes the checks Start makes of an app before it opens anything
// (every global function deterministic), for a dry run.
func CheckApp(app *schema.App) error { return checkGlobalFunctions(app) }
