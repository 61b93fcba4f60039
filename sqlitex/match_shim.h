#ifndef LUNORA_MATCH_SHIM_H
#define LUNORA_MATCH_SHIM_H
#include <stdint.h>

typedef struct sqlite3 sqlite3;
typedef struct sqlite3_context sqlite3_context;
typedef struct sqlite3_value sqlite3_value;

// lunora_match_cfg is one connection's LIKE/GLOB settings, owned by Go
// (C memory, freed when the connection closes).
typedef struct lunora_match_cfg {
	uintptr_t handle;   // cgo.Handle of the *Conn, for the slow path
	int64_t fast_steps; // worst-case steps SQLite's matcher may take
	int max_pattern;    // bytes; longer patterns are refused
	// lunora_now(): now_ms when has_now, else the wall clock. Go sets
	// them from Conn.Now before each statement runs.
	int64_t now_ms;
	int has_now;
} lunora_match_cfg;

int lunora_register_match(sqlite3 *db, lunora_match_cfg *cfg);
int lunora_register_core(sqlite3 *db, lunora_match_cfg *cfg);
int64_t lunora_total_changes(sqlite3 *db);
#endif
