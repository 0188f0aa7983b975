//! Client library for ringmap devices (issue 3 fills it in).
