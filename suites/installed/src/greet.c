/*
 * greet: the command line of libgreet.
 *
 *   greet [-l LANG] [NAME]   prints "WORD, NAME!" (LANG defaults to en, NAME to world)
 *   greet -V                 prints the library's version
 *
 * Exits 1 when LANG is not in the data file, 2 on a usage error.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "greet.h"

static void usage(void)
{
    fprintf(stderr, "usage: greet [-l LANG] [NAME] | greet -V\n");
}

int main(int argc, char **argv)
{
    const char *lang = "en", *name = "world";
    char buf[256];
    int opt;

    while ((opt = getopt(argc, argv, "l:V")) != -1) {
        switch (opt) {
        case 'l':
            lang = optarg;
            break;
        case 'V':
            printf("%s\n", greet_version());
            return 0;
        default:
            usage();
            return 2;
        }
    }
    if (argc - optind > 1) {
        usage();
        return 2;
    }
    if (argc - optind == 1)
        name = argv[optind];
    if (greet_format(buf, sizeof buf, lang, name) < 0) {
        if (errno == ENOENT)
            fprintf(stderr, "greet: no greeting for language '%s' in %s\n", lang,
                    greet_datafile());
        else
            fprintf(stderr, "greet: %s: %s\n", greet_datafile(), strerror(errno));
        return 1;
    }
    printf("%s\n", buf);
    return 0;
}
