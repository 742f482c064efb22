#ifndef SWITCHBOARD_SYS_SHIM_H
#define SWITCHBOARD_SYS_SHIM_H
/* prctl is variadic and not imported into Swift. Asks the kernel to send `signal` to this process when its
   parent dies, so the children of `switchboard dev` never outlive it. Returns 0 or -1 (errno set). */
int sb_set_parent_death_signal(int signal);
#endif
