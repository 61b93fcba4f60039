// The LIKE and GLOB functions Lunora registers on every connection (see
// match.go). Cheap calls run SQLite's own matcher through its public API;
// calls whose worst case is long go to Go, which can stop at the
// statement's deadline.
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include "match_shim.h"
#include "_cgo_export.h"

#define L_SQLITE_UTF8 1
#define L_SQLITE_DETERMINISTIC 0x000000800
#define L_SQLITE_INNOCUOUS 0x000200000

extern const unsigned char *sqlite3_value_text(sqlite3_value *);
extern int sqlite3_value_bytes(sqlite3_value *);
extern void sqlite3_result_int(sqlite3_context *, int);
extern void sqlite3_result_error(sqlite3_context *, const char *, int);
extern void *sqlite3_user_data(sqlite3_context *);
extern int sqlite3_value_type(sqlite3_value *);
extern int64_t sqlite3_value_int64(sqlite3_value *);
extern double sqlite3_value_double(sqlite3_value *);
extern void sqlite3_result_int64(sqlite3_context *, int64_t);
extern int64_t sqlite3_total_changes64(sqlite3 *);
extern int sqlite3_strlike(const char *, const char *, unsigned int);
extern int sqlite3_strglob(const char *, const char *);
extern int sqlite3_create_function_v2(sqlite3 *, const char *, int, int, void *,
	void (*)(sqlite3_context *, int, sqlite3_value **),
	void (*)(sqlite3_context *, int, sqlite3_value **),
	void (*)(sqlite3_context *), void (*)(void *));

// utf8_one decodes the single character z must hold; it returns -1 when z
// holds none or more than one.
static long utf8_one(const unsigned char *z) {
	unsigned int c = z[0];
	int n;
	if (c == 0) return -1;
	if (c < 0x80) return z[1] == 0 ? (long)c : -1;
	if (c >= 0xf0) { n = 3; c &= 0x07; }
	else if (c >= 0xe0) { n = 2; c &= 0x0f; }
	else if (c >= 0xc0) { n = 1; c &= 0x1f; }
	else return z[1] == 0 ? (long)c : -1; // a stray continuation byte is one character, as in SQLite
	int i = 1;
	for (; i <= n && (z[i] & 0xc0) == 0x80; i++) c = (c << 6) | (z[i] & 0x3f);
	while ((z[i] & 0xc0) == 0x80) i++;
	return z[i] == 0 ? (long)c : -1;
}

static void lunora_match(sqlite3_context *ctx, int argc, sqlite3_value **argv, int glob) {
	lunora_match_cfg *cfg = (lunora_match_cfg *)sqlite3_user_data(ctx);
	int np = sqlite3_value_bytes(argv[0]);
	if (np > cfg->max_pattern) {
		sqlite3_result_error(ctx, "LIKE or GLOB pattern too complex", -1);
		return;
	}
	unsigned int esc = 0;
	int has_esc = 0;
	if (argc == 3) {
		const unsigned char *e = sqlite3_value_text(argv[2]);
		if (e == 0) return; // NULL
		long c = utf8_one(e);
		if (c < 0) {
			sqlite3_result_error(ctx, "ESCAPE expression must be a single character", -1);
			return;
		}
		esc = (unsigned int)c;
		has_esc = 1;
	}
	const unsigned char *p = sqlite3_value_text(argv[0]);
	const unsigned char *s = sqlite3_value_text(argv[1]);
	if (p == 0 || s == 0) return; // NULL
	np = sqlite3_value_bytes(argv[0]);
	int ns = sqlite3_value_bytes(argv[1]);
	// With '%' or '_' as the escape, SQLite's LIKE takes away their
	// wildcard meaning, which sqlite3_strlike does not: those go to Go.
	int plain_esc = !has_esc || (esc != '%' && esc != '_');
	if (plain_esc && (int64_t)(np + 1) * (int64_t)(ns + 1) <= cfg->fast_steps) {
		int r = glob ? sqlite3_strglob((const char *)p, (const char *)s)
		             : sqlite3_strlike((const char *)p, (const char *)s, esc);
		sqlite3_result_int(ctx, r == 0);
		return;
	}
	int r = lunoraMatchSlow(cfg->handle, (char *)p, np, (char *)s, ns, esc, has_esc, glob);
	if (r < 0) {
		sqlite3_result_error(ctx, "interrupted: the statement ran past its time limit", -1);
		return;
	}
	sqlite3_result_int(ctx, r);
}

static void lunora_like(sqlite3_context *ctx, int argc, sqlite3_value **argv) { lunora_match(ctx, argc, argv, 0); }
static void lunora_glob(sqlite3_context *ctx, int argc, sqlite3_value **argv) { lunora_match(ctx, argc, argv, 1); }

int lunora_register_match(sqlite3 *db, lunora_match_cfg *cfg) {
	int flags = L_SQLITE_UTF8 | L_SQLITE_DETERMINISTIC | L_SQLITE_INNOCUOUS;
	int rc = sqlite3_create_function_v2(db, "like", 2, flags, cfg, lunora_like, 0, 0, 0);
	if (rc == 0) rc = sqlite3_create_function_v2(db, "like", 3, flags, cfg, lunora_like, 0, 0, 0);
	if (rc == 0) rc = sqlite3_create_function_v2(db, "glob", 2, flags, cfg, lunora_glob, 0, 0, 0);
	return rc;
}

// lunora_now() and lunora_assert(cond, msg) in C (registered by
// registerCore, conn.go): they run for most statements, and a Go function
// registered through the driver costs a cgo callback and reflection on
// every call. They behave as the Go versions they replace did.

#define L_SQLITE_INTEGER 1
#define L_SQLITE_FLOAT 2
#define L_SQLITE_TEXT 3
#define L_SQLITE_BLOB 4
#define L_SQLITE_NULL 5

static void lunora_now_fn(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
	lunora_match_cfg *cfg = (lunora_match_cfg *)sqlite3_user_data(ctx);
	if (cfg->has_now) {
		sqlite3_result_int64(ctx, cfg->now_ms);
		return;
	}
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	sqlite3_result_int64(ctx, (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
}

// truthy follows the Go version: NULL, 0, 0.0, '', '0' and an empty blob
// are false.
static int lunora_truthy(sqlite3_value *v) {
	switch (sqlite3_value_type(v)) {
	case L_SQLITE_NULL:
		return 0;
	case L_SQLITE_INTEGER:
		return sqlite3_value_int64(v) != 0;
	case L_SQLITE_FLOAT:
		return sqlite3_value_double(v) != 0.0;
	case L_SQLITE_TEXT: {
		const unsigned char *t = sqlite3_value_text(v);
		int n = sqlite3_value_bytes(v);
		return !(n == 0 || (n == 1 && t[0] == '0'));
	}
	default:
		return sqlite3_value_bytes(v) > 0;
	}
}

static void lunora_assert_fn(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
	lunora_match_cfg *cfg = (lunora_match_cfg *)sqlite3_user_data(ctx);
	int mt = sqlite3_value_type(argv[1]);
	if (mt != L_SQLITE_TEXT && mt != L_SQLITE_BLOB) {
		sqlite3_result_error(ctx, "argument must be BLOB or TEXT", -1);
		return;
	}
	if (lunora_truthy(argv[0])) {
		sqlite3_result_int64(ctx, 1);
		return;
	}
	// The failure path (rare) tells the connection, which classifies the
	// statement's error by it.
	const char *m = (const char *)sqlite3_value_text(argv[1]);
	int n = sqlite3_value_bytes(argv[1]);
	lunoraAssertFailed(cfg->handle, (char *)m, n);
	if (n == 0) {
		sqlite3_result_error(ctx, "lunora_assert failed", -1);
	} else {
		sqlite3_result_error(ctx, m, n);
	}
}

int lunora_register_core(sqlite3 *db, lunora_match_cfg *cfg) {
	int rc = sqlite3_create_function_v2(db, "lunora_now", 0, L_SQLITE_UTF8, cfg, lunora_now_fn, 0, 0, 0);
	if (rc == 0) rc = sqlite3_create_function_v2(db, "lunora_assert", 2, L_SQLITE_UTF8, cfg, lunora_assert_fn, 0, 0, 0);
	return rc;
}

int64_t lunora_total_changes(sqlite3 *db) { return sqlite3_total_changes64(db); }
