#include "sys_shim.h"
#include <sys/prctl.h>

int sb_set_parent_death_signal(int signal) {
    return prctl(PR_SET_PDEATHSIG, signal, 0, 0, 0);
}
