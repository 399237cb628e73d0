/* version.h - the release version shared by all five programs. */
#ifndef KB_VERSION_H
#define KB_VERSION_H

#define KB_VERSION "0.1.0"

#endif
