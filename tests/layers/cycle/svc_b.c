int svc_a(int x);
int svc_b(int x);
int svc_b(int x) { return svc_a(x); }
