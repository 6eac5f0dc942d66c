/*
 * greet_test: atf-c test program of the installed libgreet, installed into
 * PREFIX/tests/greet/lib. It links against the installed library through an RPATH to
 * PREFIX/lib (as libtool links installed programs) and reads the installed files by their
 * absolute paths, which the Makefile compiles in (GREET_PKGDATADIR, GREET_BINDIR).
 *
 * Verdicts under kyua with PREFIX/tests/greet/kyua.conf: every case passes except
 * klingon (expected_failure), random (skipped by its body) and missing_data (skipped by an
 * unmet require.files).
 */
#include <atf-c.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "greet.h"

#define DATAFILE GREET_PKGDATADIR "/greetings.txt"
#define GREET_CLI GREET_BINDIR "/greet"

/* Formats LANG's greeting of NAME into a static buffer; fails the case if greet_format does. */
static const char *greeting(const char *lang, const char *name)
{
    static char buf[256];

    if (greet_format(buf, sizeof buf, lang, name) < 0)
        atf_tc_fail("greet_format(%s, %s): %s", lang, name, strerror(errno));
    return buf;
}

ATF_TC(hello);
ATF_TC_HEAD(hello, tc)
{
    atf_tc_set_md_var(tc, "descr", "The library greets in English and knows its version");
}
ATF_TC_BODY(hello, tc)
{
    ATF_CHECK_STREQ("Hello, world!", greeting("en", "world"));
    ATF_CHECK_STREQ(GREET_VERSION, greet_version());
}

ATF_TC(data_file);
ATF_TC_HEAD(data_file, tc)
{
    atf_tc_set_md_var(tc, "descr", "The installed data file is where the library looks for it");
}
ATF_TC_BODY(data_file, tc)
{
    char line[256];
    int languages = 0;
    FILE *f;

    ATF_CHECK_STREQ(DATAFILE, greet_datafile());
    ATF_CHECK_MSG(strncmp(DATAFILE, GREET_PREFIX "/", strlen(GREET_PREFIX) + 1) == 0,
                  "%s is not under the prefix %s", DATAFILE, GREET_PREFIX);
    f = fopen(DATAFILE, "r");
    ATF_REQUIRE_MSG(f != NULL, "cannot open %s: %s", DATAFILE, strerror(errno));
    while (fgets(line, sizeof line, f) != NULL)
        if (line[0] != '#' && line[0] != '\n')
            languages++;
    fclose(f);
    ATF_CHECK_EQ_MSG(4, languages, "%s lists %d languages, not 4", DATAFILE, languages);
}

ATF_TC(require_files);
ATF_TC_HEAD(require_files, tc)
{
    atf_tc_set_md_var(tc, "descr", "Every language of the data file (require.files met)");
    atf_tc_set_md_var(tc, "require.files", DATAFILE);
}
ATF_TC_BODY(require_files, tc)
{
    ATF_CHECK_STREQ("Hello, lab!", greeting("en", "lab"));
    ATF_CHECK_STREQ("Bonjour, lab!", greeting("fr", "lab"));
    ATF_CHECK_STREQ("Hallo, lab!", greeting("de", "lab"));
    ATF_CHECK_STREQ("Hola, lab!", greeting("es", "lab"));
}

ATF_TC(missing_data);
ATF_TC_HEAD(missing_data, tc)
{
    atf_tc_set_md_var(tc, "descr", "Needs a data file greet 1.0 does not install: skipped");
    atf_tc_set_md_var(tc, "require.files", GREET_PKGDATADIR "/klingon.txt");
}
ATF_TC_BODY(missing_data, tc)
{
    atf_tc_fail("%s/klingon.txt exists, or require.files was not checked",
                GREET_PKGDATADIR);
}

ATF_TC(require_progs);
ATF_TC_HEAD(require_progs, tc)
{
    atf_tc_set_md_var(tc, "descr", "Runs the installed greet program (require.progs by path)");
    atf_tc_set_md_var(tc, "require.progs", GREET_CLI);
}
ATF_TC_BODY(require_progs, tc)
{
    char out[256] = "";
    FILE *p = popen(GREET_CLI " -l de atf", "r");
    int status;

    ATF_REQUIRE_MSG(p != NULL, "popen %s: %s", GREET_CLI, strerror(errno));
    if (fgets(out, sizeof out, p) == NULL)
        out[0] = '\0';
    status = pclose(p);
    ATF_CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s exited with %#x",
                  GREET_CLI, status);
    ATF_CHECK_STREQ("Hallo, atf!\n", out);
}

ATF_TC(config_name);
ATF_TC_HEAD(config_name, tc)
{
    atf_tc_set_md_var(tc, "descr", "Greets the test suite's configured name (require.config)");
    atf_tc_set_md_var(tc, "require.config", "name");
}
ATF_TC_BODY(config_name, tc)
{
    const char *name = atf_tc_get_config_var(tc, "name");

    ATF_REQUIRE_STREQ_MSG("lab", name, "%s sets test_suites.greet.name = 'lab'", "kyua.conf");
    ATF_CHECK_STREQ("Hola, lab!", greeting("es", name));
}

ATF_TC(unprivileged);
ATF_TC_HEAD(unprivileged, tc)
{
    atf_tc_set_md_var(tc, "descr", "A non-root user reads the installed data file");
    atf_tc_set_md_var(tc, "require.user", "unprivileged");
}
ATF_TC_BODY(unprivileged, tc)
{
    ATF_REQUIRE_MSG(getuid() != 0, "runs as root despite require.user=unprivileged");
    ATF_CHECK_STREQ("Bonjour, nobody!", greeting("fr", "nobody"));
}

ATF_TC(klingon);
ATF_TC_HEAD(klingon, tc)
{
    atf_tc_set_md_var(tc, "descr", "Klingon is not in greet 1.0's data file: expected failure");
}
ATF_TC_BODY(klingon, tc)
{
    char buf[256];

    atf_tc_expect_fail("greet 1.0 has no Klingon greeting");
    ATF_CHECK_MSG(greet_format(buf, sizeof buf, "tlh", "lab") >= 0, "no greeting for tlh: %s",
                  strerror(errno));
}

ATF_TC(random);
ATF_TC_HEAD(random, tc)
{
    atf_tc_set_md_var(tc, "descr", "A feature of a later version: skipped by its body");
}
ATF_TC_BODY(random, tc)
{
    atf_tc_skip("random greetings come with greet 2.0");
}

ATF_TP_ADD_TCS(tp)
{
    ATF_TP_ADD_TC(tp, hello);
    ATF_TP_ADD_TC(tp, data_file);
    ATF_TP_ADD_TC(tp, require_files);
    ATF_TP_ADD_TC(tp, missing_data);
    ATF_TP_ADD_TC(tp, require_progs);
    ATF_TP_ADD_TC(tp, config_name);
    ATF_TP_ADD_TC(tp, unprivileged);
    ATF_TP_ADD_TC(tp, klingon);
    ATF_TP_ADD_TC(tp, random);
    return atf_no_error();
}
