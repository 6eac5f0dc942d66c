/*
 * vsock_guest: the guest half of lab-vmm's QEMU vsock check (see ../qemu_vsock.sh).
 * Built static (gcc -static) and run from a busybox initramfs.
 *
 *   vsock_guest echo PORT              listen on PORT, echo every connection until EOF
 *   vsock_guest sink PORT              listen on PORT; read each connection to EOF, check it is
 *                                      pattern A, reply with 16 bytes: count, mismatches (u64 LE)
 *   vsock_guest source PORT BYTES      listen on PORT; send each connection BYTES of pattern B
 *   vsock_guest client CID PORT BYTES  connect to CID:PORT (retrying for 120 s), send BYTES of
 *                                      pattern A while receiving BYTES of pattern B, check them,
 *                                      and print one "@@vsock client ..." line on the console
 *
 * Pattern A byte i is pattern(i, 0x41); pattern B is pattern(i, 0x42); the host side
 * (examples/vsock_probe.rs) uses the same function.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/vm_sockets.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Cheap under TCG (no division), and a byte moved, lost or repeated anywhere shows. */
static inline uint8_t pattern(uint64_t i, uint8_t seed)
{
	uint64_t x = i ^ (i >> 11) ^ (i >> 19);
	return (uint8_t)(x * 0x9d + seed);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void echo_conn(int fd)
{
	static char buf[65536];
	for (;;) {
		ssize_t n = read(fd, buf, sizeof buf);
		if (n == 0)
			break;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		for (ssize_t off = 0; off < n;) {
			ssize_t w = write(fd, buf + off, n - off);
			if (w < 0) {
				if (errno == EINTR)
					continue;
				goto out;
			}
			off += w;
		}
	}
out:
	shutdown(fd, SHUT_WR);
	/* Drain until the host closes, so the host reads everything before the RST. */
	while (read(fd, buf, sizeof buf) > 0)
		;
	close(fd);
}

static void sink_conn(int fd)
{
	static uint8_t buf[65536];
	uint64_t got = 0, bad = 0;
	for (;;) {
		ssize_t n = read(fd, buf, sizeof buf);
		if (n == 0)
			break;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		for (ssize_t i = 0; i < n; i++)
			if (buf[i] != pattern(got + i, 0x41))
				bad++;
		got += n;
	}
	uint64_t reply[2] = { got, bad };
	if (write(fd, reply, sizeof reply) != sizeof reply)
		perror("@@vsock sink reply");
	shutdown(fd, SHUT_WR);
	while (read(fd, buf, sizeof buf) > 0)
		;
	close(fd);
}

static uint64_t source_bytes;

static void source_conn(int fd)
{
	static uint8_t buf[65536];
	uint64_t sent = 0;
	while (sent < source_bytes) {
		size_t n = sizeof buf;
		if (source_bytes - sent < n)
			n = source_bytes - sent;
		for (size_t i = 0; i < n; i++)
			buf[i] = pattern(sent + i, 0x42);
		for (size_t off = 0; off < n;) {
			ssize_t w = write(fd, buf + off, n - off);
			if (w < 0) {
				if (errno == EINTR)
					continue;
				goto out;
			}
			off += w;
		}
		sent += n;
	}
out:
	shutdown(fd, SHUT_WR);
	while (read(fd, buf, sizeof buf) > 0)
		;
	close(fd);
}

static int serve(unsigned port, const char *name, void (*handle)(int))
{
	int s = socket(AF_VSOCK, SOCK_STREAM, 0);
	if (s < 0) {
		perror("@@vsock socket");
		return 1;
	}
	struct sockaddr_vm addr = { .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = port };
	if (bind(s, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(s, 16) < 0) {
		perror("@@vsock bind/listen");
		return 1;
	}
	signal(SIGCHLD, SIG_IGN);
	printf("@@vsock %s listening port=%u\n", name, port);
	fflush(stdout);
	for (;;) {
		int c = accept(s, NULL, NULL);
		if (c < 0) {
			if (errno == EINTR)
				continue;
			perror("@@vsock accept");
			return 1;
		}
		pid_t pid = fork();
		if (pid == 0) {
			close(s);
			handle(c);
			_exit(0);
		}
		close(c);
	}
}

static int do_client(unsigned cid, unsigned port, uint64_t bytes)
{
	int s = -1;
	double deadline = now_s() + 120;
	for (;;) {
		s = socket(AF_VSOCK, SOCK_STREAM, 0);
		struct sockaddr_vm addr = { .svm_family = AF_VSOCK, .svm_cid = cid, .svm_port = port };
		double t0 = now_s();
		if (connect(s, (struct sockaddr *)&addr, sizeof addr) == 0) {
			printf("@@vsock client connected connect_us=%.0f\n", (now_s() - t0) * 1e6);
			fflush(stdout);
			break;
		}
		close(s);
		if (now_s() > deadline) {
			printf("@@vsock client FAILED connect: %s\n", strerror(errno));
			return 1;
		}
		usleep(200 * 1000);
	}
	double t0 = now_s();
	pid_t pid = fork();
	if (pid == 0) {
		static uint8_t buf[65536];
		uint64_t sent = 0;
		while (sent < bytes) {
			size_t n = sizeof buf;
			if (bytes - sent < n)
				n = bytes - sent;
			for (size_t i = 0; i < n; i++)
				buf[i] = pattern(sent + i, 0x41);
			for (size_t off = 0; off < n;) {
				ssize_t w = write(s, buf + off, n - off);
				if (w < 0) {
					if (errno == EINTR)
						continue;
					printf("@@vsock client FAILED write: %s\n", strerror(errno));
					_exit(1);
				}
				off += w;
			}
			sent += n;
		}
		shutdown(s, SHUT_WR);
		_exit(0);
	}
	static uint8_t buf[65536];
	uint64_t got = 0, bad = 0;
	for (;;) {
		ssize_t n = read(s, buf, sizeof buf);
		if (n == 0)
			break;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			printf("@@vsock client FAILED read: %s\n", strerror(errno));
			return 1;
		}
		for (ssize_t i = 0; i < n; i++)
			if (buf[i] != pattern(got + i, 0x42))
				bad++;
		got += n;
	}
	int status = 0;
	waitpid(pid, &status, 0);
	double secs = now_s() - t0;
	close(s);
	int ok = got == bytes && bad == 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
	printf("@@vsock client %s sent=%llu received=%llu mismatched=%llu secs=%.3f\n", ok ? "ok" : "FAILED",
	       (unsigned long long)bytes, (unsigned long long)got, (unsigned long long)bad, secs);
	fflush(stdout);
	return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc == 3 && strcmp(argv[1], "echo") == 0)
		return serve((unsigned)strtoul(argv[2], NULL, 0), "echo", echo_conn);
	if (argc == 3 && strcmp(argv[1], "sink") == 0)
		return serve((unsigned)strtoul(argv[2], NULL, 0), "sink", sink_conn);
	if (argc == 4 && strcmp(argv[1], "source") == 0) {
		source_bytes = strtoull(argv[3], NULL, 0);
		return serve((unsigned)strtoul(argv[2], NULL, 0), "source", source_conn);
	}
	if (argc == 5 && strcmp(argv[1], "client") == 0)
		return do_client((unsigned)strtoul(argv[2], NULL, 0), (unsigned)strtoul(argv[3], NULL, 0),
				 strtoull(argv[4], NULL, 0));
	fprintf(stderr, "usage: vsock_guest echo|sink PORT | source PORT BYTES | client CID PORT BYTES\n");
	return 2;
}
