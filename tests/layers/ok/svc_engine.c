int core_util(int x);
int svc_engine(int x);
int svc_engine(int x) { return core_util(x) * 2; }
