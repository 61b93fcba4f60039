package sqlitex

/*
#include <malloc.h>
*/
import "C"

// TrimMemory hands memory the C allocator holds but no longer uses back to
// the operating system. SQLite allocates with malloc; after many
// connections close, glibc keeps their freed pages in its arenas until
// asked to trim.
func TrimMemory() { C.malloc_trim(0) }
