/* Two svc files that call each other: a cycle check-layers must refuse. */
int svc_b(int x);
int svc_a(int x);
int svc_a(int x) { return x > 0 ? svc_b(x - 1) : 0; }
