// The trampolines through which SQLite calls Lunora's Go functions, its
// authorizer and its update hook (callbacks.go). The driver's own
// registration keeps one entry per callback and connection in a
// process-wide map that it scans in full on every close: with thousands
// of open connections that scan cost milliseconds per close.
#include <stdint.h>
#include <stdlib.h>
#include "match_shim.h"
#include "_cgo_export.h"

#define L_SQLITE_UTF8 1
#define L_SQLITE_DETERMINISTIC 0x000000800
#define L_SQLITE_TRANSIENT ((void (*)(void *))-1)

extern void *sqlite3_user_data(sqlite3_context *);
extern int sqlite3_create_function_v2(sqlite3 *, const char *, int, int, void *,
	void (*)(sqlite3_context *, int, sqlite3_value **),
	void (*)(sqlite3_context *, int, sqlite3_value **),
	void (*)(sqlite3_context *), void (*)(void *));
extern int sqlite3_set_authorizer(sqlite3 *, int (*)(void *, int, const char *, const char *, const char *, const char *), void *);
extern void *sqlite3_update_hook(sqlite3 *, void (*)(void *, int, const char *, const char *, int64_t), void *);
extern void sqlite3_result_text(sqlite3_context *, const char *, int, void (*)(void *));
extern void sqlite3_result_blob(sqlite3_context *, const void *, int, void (*)(void *));
extern void sqlite3_result_error(sqlite3_context *, const char *, int);
extern void sqlite3_result_int64(sqlite3_context *, int64_t);
extern void sqlite3_result_double(sqlite3_context *, double);
extern void sqlite3_result_null(sqlite3_context *);
extern int sqlite3_value_type(sqlite3_value *);
extern int64_t sqlite3_value_int64(sqlite3_value *);
extern double sqlite3_value_double(sqlite3_value *);
extern const unsigned char *sqlite3_value_text(sqlite3_value *);
extern const void *sqlite3_value_blob(sqlite3_value *);
extern int sqlite3_value_bytes(sqlite3_value *);

static void lunora_go_fn(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
	lunora_fn_slot *slot = (lunora_fn_slot *)sqlite3_user_data(ctx);
	lunoraFunc(slot->handle, slot->id, ctx, argc, argv);
}

int lunora_register_go_fn(sqlite3 *db, const char *name, int nargs, int deterministic, lunora_fn_slot *slot) {
	int flags = L_SQLITE_UTF8 | (deterministic ? L_SQLITE_DETERMINISTIC : 0);
	return sqlite3_create_function_v2(db, name, nargs, flags, slot, lunora_go_fn, 0, 0, 0);
}

static int lunora_authorizer(void *p, int action, const char *a1, const char *a2, const char *a3, const char *a4) {
	(void)a4;
	lunora_match_cfg *cfg = (lunora_match_cfg *)p;
	return lunoraAuthorize(cfg->handle, action, (char *)a1, (char *)a2, (char *)a3);
}

static void lunora_update_hook(void *p, int op, const char *db, const char *table, int64_t rowid) {
	(void)op; (void)db; (void)rowid;
	lunora_match_cfg *cfg = (lunora_match_cfg *)p;
	lunoraUpdated(cfg->handle, (char *)table);
}

void lunora_set_hooks(sqlite3 *db, lunora_match_cfg *cfg) {
	sqlite3_set_authorizer(db, lunora_authorizer, cfg);
	sqlite3_update_hook(db, lunora_update_hook, cfg);
}

void lunora_result_text(sqlite3_context *ctx, const char *p, int n) { sqlite3_result_text(ctx, p, n, L_SQLITE_TRANSIENT); }
void lunora_result_blob(sqlite3_context *ctx, const void *p, int n) { sqlite3_result_blob(ctx, p, n, L_SQLITE_TRANSIENT); }
void lunora_result_error(sqlite3_context *ctx, const char *p, int n) { sqlite3_result_error(ctx, p, n); }
void lunora_result_int64(sqlite3_context *ctx, int64_t v) { sqlite3_result_int64(ctx, v); }
void lunora_result_double(sqlite3_context *ctx, double v) { sqlite3_result_double(ctx, v); }
void lunora_result_null(sqlite3_context *ctx) { sqlite3_result_null(ctx); }
int lunora_value_type(sqlite3_value **argv, int i) { return sqlite3_value_type(argv[i]); }
int64_t lunora_value_int64(sqlite3_value **argv, int i) { return sqlite3_value_int64(argv[i]); }
double lunora_value_double(sqlite3_value **argv, int i) { return sqlite3_value_double(argv[i]); }

// lunora_value_bytes_ptr returns the value's bytes as text (text != 0) or
// as a blob, and their length in *n.
const void *lunora_value_bytes_ptr(sqlite3_value **argv, int i, int *n, int text) {
	const void *p = text ? (const void *)sqlite3_value_text(argv[i]) : sqlite3_value_blob(argv[i]);
	*n = sqlite3_value_bytes(argv[i]);
	return p;
}
