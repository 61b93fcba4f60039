// SQLite's process-wide memory settings and per-connection figures
// (sqlitex/memconfig.go). sqlite3.h is not included: the symbols come from
// go-sqlite3's amalgamation, linked into the same binary.
typedef struct sqlite3 sqlite3;

extern int sqlite3_shutdown(void);
extern int sqlite3_initialize(void);
extern int sqlite3_config(int, ...);
extern int sqlite3_db_status(sqlite3 *, int op, int *cur, int *hiwtr, int reset);
extern long long sqlite3_memory_used(void);

// In sqlite3.h: SQLITE_CONFIG_PAGECACHE 7, SQLITE_CONFIG_LOOKASIDE 13.
#define L_SQLITE_CONFIG_PAGECACHE 7
#define L_SQLITE_CONFIG_LOOKASIDE 13

int lunora_config_memory(int lookaside_size, int lookaside_slots, int pcache_initsz) {
	int rc = sqlite3_shutdown();
	if (rc == 0) rc = sqlite3_config(L_SQLITE_CONFIG_LOOKASIDE, lookaside_size, lookaside_slots);
	if (rc == 0) rc = sqlite3_config(L_SQLITE_CONFIG_PAGECACHE, (void *)0, 0, pcache_initsz);
	int rc2 = sqlite3_initialize();
	return rc ? rc : rc2;
}

int lunora_db_status(sqlite3 *db, int op) {
	int cur = 0, hi = 0;
	if (sqlite3_db_status(db, op, &cur, &hi, 0) != 0) return -1;
	return cur;
}

long long lunora_memory_used(void) { return sqlite3_memory_used(); }

extern long long sqlite3_soft_heap_limit64(long long);

long long lunora_soft_heap_limit(long long n) { return sqlite3_soft_heap_limit64(n); }

extern int sqlite3_db_release_memory(sqlite3 *);

int lunora_db_release_memory(sqlite3 *db) { return sqlite3_db_release_memory(db); }
