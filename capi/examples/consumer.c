/*
 * A C consumer of a ringmap ring, written as a libbpf ring buffer consumer would be:
 * ringmap_ring_buffer__new with a callback, ringmap_ring_buffer__poll in a loop, free.
 * Writes the records given on the command line first (through ringmap_device__write), then
 * reads them back; a record "stop" makes the callback return -1, which stops the poll and
 * leaves that record in the ring.
 *
 *   cargo build -p ringmap-capi
 *   cc -I capi/include capi/examples/consumer.c target/debug/libringmap.a -lpthread -ldl -lm
 *   ./a.out /path/to/socket one two stop three
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "ringmap.h"

static int print_record(void *ctx, const void *data, size_t size)
{
    int *seen = ctx;
    if (size == 4 && memcmp(data, "stop", 4) == 0)
        return -1;
    printf("record %d: %.*s\n", *seen, (int)size, (const char *)data);
    (*seen)++;
    return 0;
}

int main(int argc, char **argv)
{
    const char *socket = argc > 1 ? argv[1] : NULL;
    ringmap_device *device = ringmap_device__open(socket);
    if (!device) {
        fprintf(stderr, "ringmap_device__open: %s\n", strerror(errno));
        return 1;
    }
    for (int i = 2; i < argc; i++) {
        long long offset = ringmap_device__write(device, argv[i], strlen(argv[i]));
        if (offset < 0) {
            fprintf(stderr, "ringmap_device__write: %s\n", strerror((int)-offset));
            return 1;
        }
    }
    int seen = 0;
    ringmap_ring_buffer *rb = ringmap_ring_buffer__new(socket, print_record, &seen, NULL);
    if (!rb) {
        fprintf(stderr, "ringmap_ring_buffer__new: %s\n", strerror(errno));
        return 1;
    }
    int polled = ringmap_ring_buffer__poll(rb, 1000);
    printf("poll: %d\n", polled);
    if (ringmap_ring_buffer__epoll_fd(rb) < 0) {
        fprintf(stderr, "ringmap_ring_buffer__epoll_fd failed\n");
        return 1;
    }
    ringmap_ring_buffer__free(rb);
    ringmap_stats stats;
    if (ringmap_device__stats(device, &stats) != 0)
        return 1;
    printf("produced %llu consumed %llu\n", (unsigned long long)stats.produced,
           (unsigned long long)stats.consumed);
    ringmap_device__close(device);
    return 0;
}
