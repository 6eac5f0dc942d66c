/*
 * greet.h: the public interface of libgreet, a small library that greets in the languages its
 * data file lists. Installed into PREFIX/include; `pkg-config --cflags --libs greet` finds it.
 */
#ifndef GREET_H
#define GREET_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The library's version, "MAJOR.MINOR.PATCH". */
const char *greet_version(void);

/* The absolute path of the installed data file the library reads (PREFIX/share/greet/greetings.txt). */
const char *greet_datafile(void);

/*
 * Writes "WORD, NAME!" into BUF (LEN bytes), WORD being LANG's greeting in the data file
 * ("en", "fr", ...). Returns the length written, or -1 with errno set: ENOENT for a language
 * the data file lacks, ERANGE when BUF is too small, fopen's errno when the file cannot be read.
 */
int greet_format(char *buf, size_t len, const char *lang, const char *name);

#ifdef __cplusplus
}
#endif

#endif /* GREET_H */
