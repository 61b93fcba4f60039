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

// A Go function registered through lunora_register_go_fn: SQLite hands
// the slot to the trampoline, which calls lunoraFunc with the Conn's
// handle and the function's index (callbacks.go).
typedef struct lunora_fn_slot {
	uintptr_t handle;
	int id;
} lunora_fn_slot;

int lunora_register_go_fn(sqlite3 *db, const char *name, int nargs, int deterministic, lunora_fn_slot *slot);
void lunora_set_hooks(sqlite3 *db, lunora_match_cfg *cfg);
void lunora_result_text(sqlite3_context *ctx, const char *p, int n);
void lunora_result_blob(sqlite3_context *ctx, const void *p, int n);
void lunora_result_error(sqlite3_context *ctx, const char *p, int n);
void lunora_result_int64(sqlite3_context *ctx, int64_t v);
void lunora_result_double(sqlite3_context *ctx, double v);
void lunora_result_null(sqlite3_context *ctx);
int lunora_value_type(sqlite3_value **argv, int i);
int64_t lunora_value_int64(sqlite3_value **argv, int i);
double lunora_value_double(sqlite3_value **argv, int i);
const void *lunora_value_bytes_ptr(sqlite3_value **argv, int i, int *n, int text);
#endif
