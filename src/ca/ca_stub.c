#include "ca_cmd.h"
#include <stdio.h>
int ca_cmd_register(const kb_config *cfg, int argc, char **argv)
{
    (void)cfg;
    (void)argc;
    (void)argv;
    return 1;
}
int ca_cmd_list(const kb_config *cfg, int argc, char **argv)
{
    (void)cfg;
    (void)argc;
    (void)argv;
    return 1;
}
int ca_cmd_remove(const kb_config *cfg, int argc, char **argv)
{
    (void)cfg;
    (void)argc;
    (void)argv;
    return 1;
}
int ca_cmd_serve(const kb_config *cfg, int argc, char **argv)
{
    (void)cfg;
    (void)argc;
    (void)argv;
    return 1;
}
int ca_cmd_renew_once(const kb_config *cfg, int argc, char **argv)
{
    (void)cfg;
    (void)argc;
    (void)argv;
    return 1;
}
