/* plexus/plexus.h — includes the whole public core API. */
#ifndef PLEXUS_PLEXUS_H
#define PLEXUS_PLEXUS_H
#include <plexus/error.h>
#include <plexus/alarm.h>
#include <plexus/log.h>
#include <plexus/msg.h>
#include <plexus/system.h>
#include <plexus/actor.h>
#include <plexus/router.h>
#include <plexus/supervisor.h>
#include <plexus/topic.h>
#endif
