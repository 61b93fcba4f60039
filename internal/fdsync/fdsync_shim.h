#ifndef LUNORA_FDSYNC_SHIM_H
#define LUNORA_FDSYNC_SHIM_H
#include <stdint.h>

// One finished fdatasync: the caller's token and errno (0: success).
typedef struct {
	uint64_t token;
	int64_t err;
} fdsync_done;

struct fdsync_pool;
struct fdsync_pool *fdsync_start(int threads, int notify_fd, int *err);
int fdsync_submit(struct fdsync_pool *p, int fd, uint64_t token);
#endif
