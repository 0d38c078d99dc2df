transform <- function(df_1) { df_1 }
