/*
 * libgreet: greetings looked up in an installed data file. Its path is compiled in, as
 * autotools projects do with -DPKGDATADIR="$(pkgdatadir)": the Makefile passes
 * GREET_PKGDATADIR and GREET_VERSION.
 */
#include "greet.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#ifndef GREET_PKGDATADIR
#error "GREET_PKGDATADIR is not defined (the Makefile passes it)"
#endif
#ifndef GREET_VERSION
#error "GREET_VERSION is not defined (the Makefile passes it)"
#endif

const char *greet_version(void)
{
    return GREET_VERSION;
}

const char *greet_datafile(void)
{
    return GREET_PKGDATADIR "/greetings.txt";
}

/* Copies LANG's word from the data file (lines "LANG WORD", '#' comments) into WORD. */
static int lookup(const char *lang, char *word, size_t len)
{
    char line[256], code[32], found[128];
    int rc = -1;
    FILE *f = fopen(greet_datafile(), "r");

    if (f == NULL)
        return -1;
    while (fgets(line, sizeof line, f) != NULL) {
        if (line[0] == '#')
            continue;
        if (sscanf(line, "%31s %127[^\n]", code, found) != 2)
            continue;
        if (strcmp(code, lang) == 0) {
            snprintf(word, len, "%s", found);
            rc = 0;
            break;
        }
    }
    fclose(f);
    if (rc != 0)
        errno = ENOENT;
    return rc;
}

int greet_format(char *buf, size_t len, const char *lang, const char *name)
{
    char word[128];
    int n;

    if (lookup(lang, word, sizeof word) != 0)
        return -1;
    n = snprintf(buf, len, "%s, %s!", word, name);
    if (n < 0 || (size_t)n >= len) {
        errno = ERANGE;
        return -1;
    }
    return n;
}
