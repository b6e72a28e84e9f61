/*
 * error.c — px_err strings, generated from the one PX_ERR_MAP table.
 * Static strings only: safe from any thread.
 */
#include <plexus/error.h>

const char *px_strerror(px_err err) {
    switch (err) {
#define PX_ERR_STR_(name, value, text)                                         \
    case name:                                                                 \
        return text;
        PX_ERR_MAP(PX_ERR_STR_)
#undef PX_ERR_STR_
    }
    return "unknown error";
}

const char *px_errname(px_err err) {
    switch (err) {
#define PX_ERR_NAME_(name, value, text)                                        \
    case name:                                                                 \
        return #name;
        PX_ERR_MAP(PX_ERR_NAME_)
#undef PX_ERR_NAME_
    }
    return "PX_E?";
}
