/* glibc_compat.c - linked into the Lambda bootstrap only (scripts/package-lambda.sh).
 *
 * Debian 12's libevent_core.a (evutil_rand.o, pulled in by event.o) calls arc4random and
 * arc4random_buf, which glibc added in 2.36 (GLIBC_2.36); Amazon Linux 2023 (provided.al2023)
 * has glibc 2.34, where the bootstrap would fail to load. Defined here on getrandom(2)
 * (GLIBC_2.25), the executable's definitions win over libc's and the binary's highest glibc
 * symbol version stays at or below 2.34 (package-lambda.sh checks it). Same contract as
 * glibc's: never fails; aborts if the kernel's CSPRNG cannot be read. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/random.h>

void arc4random_buf(void *buf, size_t n)
{
    unsigned char *p = buf;
    while (n > 0) {
        ssize_t r = getrandom(p, n, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            abort();
        }
        p += r;
        n -= (size_t)r;
    }
}

uint32_t arc4random(void)
{
    uint32_t v;
    arc4random_buf(&v, sizeof v);
    return v;
}

uint32_t arc4random_uniform(uint32_t upper_bound)
{
    uint32_t v, min;
    if (upper_bound < 2)
        return 0;
    min = (uint32_t)(-upper_bound) % upper_bound; /* reject the biased low values */
    do {
        v = arc4random();
    } while (v < min);
    return v % upper_bound;
}
