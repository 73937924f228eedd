/* ui.h - the operator dashboard, compiled into the binary from
 * the files in ui/ (tools/embed.c, a meson build step). */
#ifndef SNAPSYNC_UI_H
#define SNAPSYNC_UI_H

#include <stddef.h>

struct ui_asset {
    const char *name;                /* "index.html", "app.js", ..., "sdk/snapsync.js" */
    const char *ctype;
    const unsigned char *data;
    unsigned long len;
    unsigned long hash;              /* for the ETag */
};

extern const struct ui_asset ui_assets[];   /* ends with a zeroed entry */

struct http_req;
struct router;
void api_ui(struct http_req *r);
void api_ui_redirect(struct http_req *r);
void api_sdk(struct http_req *r);    /* GET /sdk/snapsync.js */

#endif
