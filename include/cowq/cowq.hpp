// Everything cowq offers, for users who want one include.
#pragma once

#include <cowq/blocking.hpp>
#include <cowq/file.hpp>
#include <cowq/io.hpp>
#include <cowq/log.hpp>
#include <cowq/runtime.hpp>
#include <cowq/scheduling.hpp>
#include <cowq/stats.hpp>
#include <cowq/sync.hpp>
#include <cowq/sync_wait.hpp>
#include <cowq/task.hpp>
#include <cowq/task_group.hpp>
#include <cowq/timer.hpp>
#include <cowq/when_all.hpp>
#include <cowq/work.hpp>
#include <cowq/workqueue.hpp>
