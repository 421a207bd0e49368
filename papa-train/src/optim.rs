//! SGD with momentum, weight decay and Nesterov; learning-rate schedules.
