// A pool of POSIX threads that run fdatasync(2) for Go (fdsync.go). The
// threads are not the Go runtime's: while one waits for the disk, no Go
// scheduler P is held, and the goroutine that asked waits parked on a
// channel. Each finished call writes one record {token, errno} to a pipe
// the Go side reads through its poller.
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "fdsync_shim.h"

typedef struct {
	int fd;
	uint64_t token;
} fdsync_job;

struct fdsync_pool {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	fdsync_job *q;
	int cap, head, n;
	int notify; // write end of the completion pipe
};

static void finish(struct fdsync_pool *p, uint64_t token, int err) {
	fdsync_done rec = {token, (int64_t)err};
	const char *b = (const char *)&rec;
	size_t left = sizeof rec;
	// A pipe write of at most PIPE_BUF bytes is atomic; retry on EINTR.
	while (left > 0) {
		ssize_t w = write(p->notify, b, left);
		if (w < 0) {
			if (errno == EINTR) continue;
			abort(); // the pipe is gone: the process is broken
		}
		b += w;
		left -= (size_t)w;
	}
}

static void *worker(void *arg) {
	struct fdsync_pool *p = arg;
	for (;;) {
		pthread_mutex_lock(&p->mu);
		while (p->n == 0) pthread_cond_wait(&p->cv, &p->mu);
		fdsync_job j = p->q[p->head];
		p->head = (p->head + 1) % p->cap;
		p->n--;
		pthread_mutex_unlock(&p->mu);
		int err = 0;
		while (fdatasync(j.fd) != 0) {
			if (errno != EINTR) {
				err = errno;
				break;
			}
		}
		finish(p, j.token, err);
	}
	return NULL;
}

struct fdsync_pool *fdsync_start(int threads, int notify_fd, int *err) {
	struct fdsync_pool *p = calloc(1, sizeof *p);
	if (p == NULL) {
		*err = ENOMEM;
		return NULL;
	}
	p->cap = 64;
	p->q = calloc((size_t)p->cap, sizeof *p->q);
	if (p->q == NULL) {
		free(p);
		*err = ENOMEM;
		return NULL;
	}
	p->notify = notify_fd;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 64 * 1024);
	for (int i = 0; i < threads; i++) {
		pthread_t t;
		int rc = pthread_create(&t, &attr, worker, p);
		if (rc != 0) {
			// Threads already started stay (they wait on an empty queue);
			// the pool is not used.
			pthread_attr_destroy(&attr);
			*err = rc;
			return NULL;
		}
	}
	pthread_attr_destroy(&attr);
	*err = 0;
	return p;
}

int fdsync_submit(struct fdsync_pool *p, int fd, uint64_t token) {
	pthread_mutex_lock(&p->mu);
	if (p->n == p->cap) {
		int ncap = p->cap * 2;
		fdsync_job *nq = malloc((size_t)ncap * sizeof *nq);
		if (nq == NULL) {
			pthread_mutex_unlock(&p->mu);
			return ENOMEM;
		}
		for (int i = 0; i < p->n; i++) nq[i] = p->q[(p->head + i) % p->cap];
		free(p->q);
		p->q = nq;
		p->cap = ncap;
		p->head = 0;
	}
	p->q[(p->head + p->n) % p->cap] = (fdsync_job){fd, token};
	p->n++;
	pthread_cond_signal(&p->cv);
	pthread_mutex_unlock(&p->mu);
	return 0;
}
