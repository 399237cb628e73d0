/* replay_main.c - runs a libFuzzer target over the files of a corpus directory, so fuzz targets
 * build and their corpus (seeds and every crash ever found) replays in ordinary test runs. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/fileio.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int main(int argc, char **argv)
{
    int ran = 0;
    for (int a = 1; a < argc; a++) {
        DIR *d = opendir(argv[a]);
        struct dirent *e;
        if (d == NULL) {
            fprintf(stderr, "%s: no corpus directory\n", argv[a]);
            return 1;
        }
        while ((e = readdir(d)) != NULL) {
            char path[4096];
            kb_dbuf b;
            if (e->d_name[0] == '.')
                continue;
            snprintf(path, sizeof(path), "%s/%s", argv[a], e->d_name);
            kb_dbuf_init(&b, 16 * 1024 * 1024);
            if (kb_file_read(path, b.max, &b) != KB_OK) {
                fprintf(stderr, "%s: unreadable\n", path);
                kb_dbuf_free(&b);
                closedir(d);
                return 1;
            }
            /* Copy into an exact-size heap block so ASan sees any overread. */
            uint8_t *exact = malloc(b.len ? b.len : 1);
            if (b.len)
                memcpy(exact, b.p, b.len);
            LLVMFuzzerTestOneInput(exact, b.len);
            free(exact);
            kb_dbuf_free(&b);
            ran++;
        }
        closedir(d);
    }
    printf("replayed %d inputs\n", ran);
    return ran > 0 ? 0 : 1;
}
